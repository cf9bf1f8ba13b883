"""Fixtures for the contract suite: one migrated database per test, on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.db.migrate import upgrade
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.protocol import TrialProtocol
from hpo_service.orchestration.studies import StudyService
from hpo_service.settings import Settings


class FakeClock:
    """Lease expiry is tested by moving time, not by sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Service:
    def __init__(self, url: str, clock: FakeClock) -> None:
        engine = make_engine(url)
        self.context = Context(engine=engine, sessions=make_session_factory(engine),
                               settings=Settings(database_url=url), clock=clock)
        self.studies = StudyService(self.context)
        self.protocol = TrialProtocol(self.context)
        self.clock = clock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Service]:
    upgrade(database_url)
    svc = Service(database_url, clock)
    yield svc
    svc.context.engine.dispose()
