"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hpo_service.api.services import Services


async def get_services(request: Request) -> Services:  # async: a plain function would cost a thread-pool hop
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
