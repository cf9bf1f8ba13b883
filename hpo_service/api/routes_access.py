"""Tokens (`hpo token create|list|revoke`) and the dashboard's cookie session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from hpo_service.api import schemas
from hpo_service.api.auth import SESSION_COOKIE, Authenticated, TokenManager, authenticate_secret
from hpo_service.api.deps import ServicesDep
from hpo_service.api.limits import IdPath
from hpo_service.domain.access import Scope
from hpo_service.orchestration.context import as_utc

router = APIRouter(prefix="/api/v1", tags=["access"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorOut} for code in (401, 403, 404, 422, 429)}
BODY_ERRORS = {**ERRORS, **schemas.BODY_TOO_LARGE}  # operations that take a body


def _token_out(token: Any, project: str) -> dict[str, Any]:
    return {
        "id": token.id, "name": token.name, "project": project, "scope": token.scope, "prefix": token.prefix,
        "created_at": as_utc(token.created_at), "expires_at": as_utc(token.expires_at),
        "revoked_at": as_utc(token.revoked_at), "last_used_at": as_utc(token.last_used_at),
    }


@router.post("/tokens", status_code=201, response_model=schemas.TokenCreatedOut, responses=BODY_ERRORS)
def create_token(body: schemas.TokenCreateIn, services: ServicesDep, caller: TokenManager) -> dict[str, Any]:
    issued = services.access.create_token(
        caller, project=body.project or caller.project, name=body.name, scope=Scope(body.scope),
        expires_in=timedelta(days=body.expires_days) if body.expires_days else None,
    )
    return {**_token_out(issued.token, issued.project), "token": issued.secret}


@router.get("/tokens", response_model=list[schemas.TokenOut], responses=ERRORS)
def list_tokens(services: ServicesDep, caller: TokenManager) -> list[dict[str, Any]]:
    return [_token_out(token, project) for token, project in services.access.list_tokens(caller)]


@router.delete("/tokens/{token_id}", response_model=schemas.TokenOut, responses=ERRORS)
def revoke_token(token_id: IdPath, services: ServicesDep, caller: TokenManager) -> dict[str, Any]:
    token = services.access.revoke_token(caller, token_id)
    return _token_out(token, caller.project if token.project_id == caller.project_id else "?")


@router.get("/whoami", response_model=schemas.WhoAmIOut, responses=ERRORS)
def whoami(principal: Authenticated) -> schemas.WhoAmIOut:
    return schemas.WhoAmIOut(project=principal.project, scope=principal.scope.value, token_id=principal.token_id)


@router.post("/session", response_model=schemas.WhoAmIOut, responses=BODY_ERRORS)
def open_session(body: schemas.SessionIn, request: Request, response: Response,
                 services: ServicesDep) -> schemas.WhoAmIOut:
    """Check a token and keep it in an HttpOnly, SameSite=Strict cookie for the dashboard."""
    principal = authenticate_secret(request, services, body.token)
    response.set_cookie(SESSION_COOKIE, body.token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=7 * 24 * 3600)
    return schemas.WhoAmIOut(project=principal.project, scope=principal.scope.value, token_id=principal.token_id)


@router.delete("/session", status_code=204)
def close_session(response: Response) -> Response:
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response
