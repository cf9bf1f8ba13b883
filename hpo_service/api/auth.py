"""Authentication: `Authorization: Bearer <token>` or the dashboard's session cookie.

Bad tokens are counted per client address; past `BAD_TOKEN_LIMIT` in a minute the
address gets 429 for tokens this process has not verified recently, without a
database lookup. Tokens this process verified in the last `KNOWN_GOOD_TTL_S` still go
through (see `BadTokenLimiter`). Every invalid token is logged with the address, and an
address being limited once per window (not once per request: a storm must not flood the log).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hpo_service.api.deps import ServicesDep
from hpo_service.domain.access import Permission, Principal
from hpo_service.errors import Forbidden, RateLimited, Unauthorized

log = logging.getLogger("hpo_service.auth")

SESSION_COOKIE = "hpo_session"
BAD_TOKEN_LIMIT = 20
BAD_TOKEN_WINDOW_S = 60.0
KNOWN_GOOD_TTL_S = 15 * 60.0  # how long a verified token passes an address's limit

# The OpenAPI document's security scheme (components.securitySchemes.bearer), referenced by every
# operation that authenticates. Documentation only: with auto_error=False it never answers for us,
# so a missing or malformed header still gets this module's 401 in the service's error shape, and
# the dashboard's session cookie is still accepted where no header is sent.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", bearerFormat="opaque API token",
    description="`Authorization: Bearer <token>` (create one with `hpo token create`). The dashboard's "
                f"`{SESSION_COOKIE}` cookie, set by `POST /api/v1/session`, is accepted instead where no header "
                "is sent.",
)
DocumentedBearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


class BadTokenLimiter:
    """Per-address limit on *failed* token checks, which never locks out a token known to be valid.

    Why this shape: the limit exists so that a storm of forged tokens (a brute-force attempt, or
    a client with a stale token in a retry loop) costs the service nothing -- over the limit its
    requests are answered 429 without a database lookup. But one address is often many clients:
    every worker on one host, everyone behind one NAT, the dashboard of a person whose script has
    a typo. Locking all of them out because one misbehaves turns a harmless storm into an outage
    (the workers' trials would expire and be redone). So only failures are counted, and over the
    limit a request whose token this process verified in the last `KNOWN_GOOD_TTL_S` seconds is
    let through: that check is a hash lookup in memory, the storm cannot guess such a token, and
    the request is then authenticated as usual (a revoked token is still refused). A token this
    process has not seen yet waits out the window like the storm does (at most `window_s`).

    Keying by token prefix instead would not limit anything: a storm chooses its prefixes.
    """

    def __init__(self, limit: int = BAD_TOKEN_LIMIT, window_s: float = BAD_TOKEN_WINDOW_S,
                 known_good_ttl_s: float = KNOWN_GOOD_TTL_S) -> None:
        self._limit, self._window, self._known_good_ttl = limit, window_s, known_good_ttl_s
        self._failures: dict[str, deque[float]] = {}
        self._known_good: dict[str, float] = {}  # SHA-256 of a verified secret -> when it was last verified
        self._announced: dict[str, float] = {}  # address -> when its being limited was last logged
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and now - failures[0] > self._window:
            failures.popleft()
        return failures

    def check(self, client: str, secret: str | None = None) -> None:
        """Raise RateLimited when ``client`` is over the limit, unless ``secret`` was verified recently."""
        with self._lock:
            now = time.monotonic()
            if len(self._recent(client, now)) < self._limit:
                return
            if secret is not None:
                verified_at = self._known_good.get(_digest(secret))
                if verified_at is not None and now - verified_at <= self._known_good_ttl:
                    return
            if now - self._announced.get(client, -self._window) > self._window:  # one line a window, not a flood
                if len(self._announced) > 100_000:
                    self._announced.clear()
                self._announced[client] = now
                log.warning("rate-limited %s: %d invalid tokens in %.0f s; answering 429 to its tokens not verified "
                            "recently", client, len(self._failures[client]), self._window)
            raise RateLimited(f"too many invalid tokens from {client}; wait a minute and use a valid token")

    def record_failure(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()  # bounded memory under a storm of addresses
            now = time.monotonic()
            self._recent(client, now).append(now)

    def record_success(self, secret: str) -> None:
        with self._lock:
            if len(self._known_good) > 100_000:
                self._known_good.clear()  # bounded memory; valid tokens are re-learnt on their next call
            self._known_good[_digest(secret)] = time.monotonic()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE) or None


async def authenticate(request: Request, services: ServicesDep, _documented: DocumentedBearer = None) -> Principal:
    """The caller's principal, from the bearer header or the session cookie (``_documented`` only puts the
    bearer scheme into the OpenAPI document; the header is read by ``_secret_from``).

    Async on purpose: FastAPI runs a plain-function dependency on its thread pool, and on the worker
    protocol's hot path a token verified in the last few seconds is a dictionary lookup, so that hop
    would cost more than the check. Only a lookup in the database (or a refusal) goes to a thread.
    A cached token needs no rate-limit check: it was verified, so it is known good to the limiter."""
    secret = _secret_from(request)
    principal = services.access.cached(secret) if secret is not None else None
    if principal is not None:
        return principal
    return await run_in_threadpool(authenticate_secret, request, services, secret)


def authenticate_secret(request: Request, services: ServicesDep, secret: str | None) -> Principal:
    client = request.client.host if request.client else "unknown"
    limiter: BadTokenLimiter = request.app.state.bad_tokens
    limiter.check(client, secret)
    if secret is None:
        raise Unauthorized("this endpoint needs a token: send `Authorization: Bearer <token>` "
                           "(create one with `hpo token create`)")
    try:
        principal = services.access.authenticate(secret)
    except Unauthorized as error:
        limiter.record_failure(client)
        log.warning("refused a token from %s: %s", client, error.message)
        raise
    limiter.record_success(secret)
    return principal


def require(permission: Permission) -> Callable[..., Principal]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:  # async: no thread hop
        if not principal.may(permission):
            raise Forbidden(f"a {principal.scope.value} token may not {permission.value.replace('_', ' ')}")
        return principal

    return dependency


Authenticated = Annotated[Principal, Depends(authenticate)]  # any valid token, whatever its scope
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Submitter = Annotated[Principal, Depends(require(Permission.SUBMIT))]
Worker = Annotated[Principal, Depends(require(Permission.WORK))]
TokenManager = Annotated[Principal, Depends(require(Permission.MANAGE_TOKENS))]
