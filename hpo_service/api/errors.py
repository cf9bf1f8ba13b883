"""The one place where errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hpo_service.errors import HpoError

log = logging.getLogger("hpo_service.api")


def _body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def _describe(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body",))
        parts.append(f"{location + ': ' if location else ''}{str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HpoError)
    async def _hpo_error(_request: Request, error: HpoError) -> JSONResponse:
        if error.status_code >= 500:
            log.warning("%s: %s", error.code, error.message)
        return JSONResponse(_body(error.code, error.message), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("invalid_input", _describe(error)), status_code=422)
