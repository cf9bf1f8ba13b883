"""Access control use cases: authenticate a token, manage projects and tokens.

Tokens are random (`hpo_` + 32 bytes, URL-safe), shown once, stored as SHA-256
(the secret has 256 bits of entropy, so a slow hash adds nothing). A verified
token is cached for a few seconds per process so the hot worker endpoints do not
pay a query per call; revocation therefore takes effect within `CACHE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hpo_service.db.models import ApiToken, Project
from hpo_service.domain.access import DEFAULT_PROJECT, Permission, Principal, Scope
from hpo_service.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from hpo_service.orchestration.context import Context, as_utc

CACHE_SECONDS = 5.0
TOKEN_PREFIX = "hpo_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class IssuedToken:
    secret: str  # shown once, never stored
    token: ApiToken
    project: str


class AccessService:
    def __init__(self, context: Context) -> None:
        self._ctx = context
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    # --- authentication ------------------------------------------------------------------

    def cached(self, secret: str) -> Principal | None:
        """The principal of a token verified in the last `CACHE_SECONDS`, without touching the database
        (None: not verified recently, so `authenticate` must look it up)."""
        with self._lock:
            cached = self._cache.get(hash_token(secret))
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        return None

    def authenticate(self, secret: str) -> Principal:
        principal = self.cached(secret)
        if principal is not None:
            return principal
        digest = hash_token(secret)
        principal = self._ctx.run(lambda s: self._verify(s, digest))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic(), principal)
        return principal

    def _verify(self, session: Session, digest: str) -> Principal:
        row = session.execute(
            select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id)
            .where(ApiToken.token_hash == digest)
        ).first()
        if row is None:
            raise Unauthorized("the token is not valid; create one with `hpo token create`")
        token, project = row
        now = self._ctx.clock()
        if token.revoked_at is not None:
            raise Unauthorized(f"token {token.prefix}… was revoked")
        expires = as_utc(token.expires_at)
        if expires is not None and expires <= now:
            raise Unauthorized(f"token {token.prefix}… expired at {expires:%Y-%m-%d %H:%M} UTC")
        last_used = as_utc(token.last_used_at)
        if last_used is None or now - last_used > timedelta(minutes=1):
            token.last_used_at = now  # at most one write a minute per token
        return Principal(token.id, token.project_id, project, Scope(token.scope))

    # --- tokens ------------------------------------------------------------------------

    def create_token(
        self, caller: Principal, *, project: str, name: str, scope: Scope, expires_in: timedelta | None
    ) -> IssuedToken:
        _require(caller, Permission.MANAGE_TOKENS)
        if project != caller.project and not caller.is_instance_admin:
            raise Forbidden(f"an admin token of project {caller.project!r} cannot create tokens for {project!r}")
        return self._ctx.run(lambda s: self._issue(s, project, name, scope, expires_in, create_project=True))

    def _issue(
        self, session: Session, project: str, name: str, scope: Scope, expires_in: timedelta | None,
        *, create_project: bool, secret: str | None = None,
    ) -> IssuedToken:
        now = self._ctx.clock()
        project_row = session.execute(select(Project).where(Project.name == project)).scalar_one_or_none()
        if project_row is None:
            if not create_project:
                raise NotFound(f"project {project!r} does not exist")
            project_row = Project(name=project, created_at=now)
            session.add(project_row)
            session.flush()
        secret = secret or new_secret()
        token = ApiToken(
            project_id=project_row.id, name=name, scope=scope.value, token_hash=hash_token(secret),
            prefix=secret[: len(TOKEN_PREFIX) + 6], created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        session.add(token)
        session.flush()
        return IssuedToken(secret, token, project_row.name)

    def list_tokens(self, caller: Principal) -> list[tuple[ApiToken, str]]:
        _require(caller, Permission.MANAGE_TOKENS)

        def use_case(session: Session) -> list[tuple[ApiToken, str]]:
            query = select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id)
            if not caller.is_instance_admin:
                query = query.where(ApiToken.project_id == caller.project_id)
            return [(token, project) for token, project in session.execute(query.order_by(ApiToken.id))]

        return self._ctx.run(use_case)

    def revoke_token(self, caller: Principal, token_id: int) -> ApiToken:
        _require(caller, Permission.MANAGE_TOKENS)

        def use_case(session: Session) -> ApiToken:
            token = session.get(ApiToken, token_id)
            if token is None or (token.project_id != caller.project_id and not caller.is_instance_admin):
                raise NotFound(f"token {token_id} does not exist")
            if token.revoked_at is None:
                token.revoked_at = self._ctx.clock()
            return token

        token = self._ctx.run(use_case)
        with self._lock:
            self._cache.clear()  # revocation is immediate in this process
        return token

    # --- bootstrap -----------------------------------------------------------------------

    def token_count(self) -> int:
        return self._ctx.run(lambda s: int(s.execute(select(func.count()).select_from(ApiToken)).scalar_one()))

    def bootstrap_admin(self, name: str = "bootstrap admin", secret: str | None = None) -> IssuedToken:
        """An admin token of the default project (start-up of an embedded server, or `hpo db`).

        ``secret`` lets a deployment choose it (e.g. from a secret store); it must be long.
        """
        if secret is not None and len(secret) < 32:
            raise InvalidInput("a chosen admin token must have at least 32 characters")
        return self._ctx.run(lambda s: self._issue(s, DEFAULT_PROJECT, name, Scope.ADMIN, None,
                                                   create_project=True, secret=secret))

    def project_id(self, name: str) -> int:
        def use_case(session: Session) -> int:
            found = session.execute(select(Project.id).where(Project.name == name)).scalar_one_or_none()
            if found is None:
                raise NotFound(f"project {name!r} does not exist")
            return int(found)

        return self._ctx.run(use_case)


def _require(caller: Principal, permission: Permission) -> None:
    if not caller.may(permission):
        raise Forbidden(f"a {caller.scope.value} token may not {permission.value.replace('_', ' ')}; "
                        f"use a token with a scope that allows it")


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise InvalidInput(f"scope must be one of {', '.join(s.value for s in Scope)}, not {value!r}") from None
