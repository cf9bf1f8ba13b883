"""What every use case needs: the session factory, the clock, the caches.

`transaction()` is the one place where a use case's transaction begins, commits
and has its database errors translated: repositories never commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hpo_service.errors import Conflict, ServiceUnavailable
from hpo_service.sampling.cache import ProposerCache
from hpo_service.settings import Settings

T = TypeVar("T")

# PostgreSQL: serialization_failure, deadlock_detected. Safe to retry the whole use case.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    engine: Engine
    sessions: sessionmaker[Session]
    settings: Settings
    proposers: ProposerCache = field(default_factory=ProposerCache)
    clock: Callable[[], datetime] = utc_now
    # Set after any change that may create leasable work; long-polls wait on it.
    on_work_available: Callable[[], None] = lambda: None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        try:
            with self.sessions.begin() as session:
                yield session
        except IntegrityError as error:
            raise Conflict(f"the change conflicts with stored data: {error.orig}") from error
        except OperationalError as error:
            if _sqlstate(error) in _RETRYABLE_SQLSTATES:
                raise _Retry() from error
            raise ServiceUnavailable(f"the database is unavailable, retry later: {error.orig}") from error
        except DBAPIError as error:
            if error.connection_invalidated:
                raise ServiceUnavailable("the database connection was lost, retry later") from error
            raise

    def run(self, use_case: Callable[[Session], T], attempts: int = 4) -> T:
        """Run ``use_case`` in one transaction, retrying it after a deadlock or serialization failure."""
        for attempt in range(attempts):
            try:
                with self.transaction() as session:
                    return use_case(session)
            except _Retry:
                time.sleep(0.01 * 2**attempt)
        raise ServiceUnavailable("the database kept reporting conflicts (deadlocks); retry later")


class _Retry(Exception):
    pass


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
