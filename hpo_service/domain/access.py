"""Who is calling: a token's project and scope, and what each scope may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PROJECT = "default"


class Scope(StrEnum):
    ADMIN = "admin"  # manage tokens and studies (of the default project: every project)
    SUBMIT = "submit"  # create and control studies
    WORKER = "worker"  # lease and report, for the studies of its project
    READ = "read"  # dashboard and read endpoints


class Permission(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    WORK = "work"
    MANAGE_TOKENS = "manage_tokens"


GRANTS: dict[Scope, frozenset[Permission]] = {
    Scope.ADMIN: frozenset(Permission),
    Scope.SUBMIT: frozenset({Permission.READ, Permission.SUBMIT}),
    Scope.WORKER: frozenset({Permission.WORK}),
    Scope.READ: frozenset({Permission.READ}),
}


@dataclass(frozen=True)
class Principal:
    token_id: int
    project_id: int
    project: str
    scope: Scope

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.scope]

    @property
    def is_instance_admin(self) -> bool:
        """Admins of the default project manage every project."""
        return self.scope is Scope.ADMIN and self.project == DEFAULT_PROJECT
