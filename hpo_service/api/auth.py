"""Authentication: `Authorization: Bearer <token>` or the dashboard's session cookie.

Bad tokens are counted per client address; past `BAD_TOKEN_LIMIT` in a minute the
client gets 429 without a database lookup, and every refusal is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from hpo_service.api.deps import ServicesDep
from hpo_service.domain.access import Permission, Principal
from hpo_service.errors import Forbidden, RateLimited, Unauthorized

log = logging.getLogger("hpo_service.auth")

SESSION_COOKIE = "hpo_session"
BAD_TOKEN_LIMIT = 20
BAD_TOKEN_WINDOW_S = 60.0


class BadTokenLimiter:
    def __init__(self, limit: int = BAD_TOKEN_LIMIT, window_s: float = BAD_TOKEN_WINDOW_S) -> None:
        self._limit, self._window = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and now - failures[0] > self._window:
            failures.popleft()
        return failures

    def check(self, client: str) -> None:
        with self._lock:
            if len(self._recent(client, time.monotonic())) >= self._limit:
                raise RateLimited(f"too many invalid tokens from {client}; wait a minute and use a valid token")

    def record_failure(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()  # bounded memory under a storm of addresses
            self._recent(client, time.monotonic()).append(time.monotonic())


def _secret_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def authenticate(request: Request, services: ServicesDep) -> Principal:
    return authenticate_secret(request, services, _secret_from(request))


def authenticate_secret(request: Request, services: ServicesDep, secret: str | None) -> Principal:
    client = request.client.host if request.client else "unknown"
    limiter: BadTokenLimiter = request.app.state.bad_tokens
    limiter.check(client)
    if secret is None:
        raise Unauthorized("this endpoint needs a token: send `Authorization: Bearer <token>` "
                           "(create one with `hpo token create`)")
    try:
        return services.access.authenticate(secret)
    except Unauthorized as error:
        limiter.record_failure(client)
        log.warning("refused a token from %s: %s", client, error.message)
        raise


def require(permission: Permission) -> Callable[..., Principal]:
    def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.may(permission):
            raise Forbidden(f"a {principal.scope.value} token may not {permission.value.replace('_', ' ')}")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require(Permission.READ))]
Submitter = Annotated[Principal, Depends(require(Permission.SUBMIT))]
Worker = Annotated[Principal, Depends(require(Permission.WORK))]
TokenManager = Annotated[Principal, Depends(require(Permission.MANAGE_TOKENS))]
