"""Suite-wide fixtures: database URLs for SQLite and PostgreSQL (logic in tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres as pg


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a PostgreSQL server we may create databases on; never skips (see tests/support)."""
    return pg.postgres_admin_url()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty ``postgresql+psycopg://`` database for one test, dropped afterwards."""
    url = pg.create_throwaway_database(postgres_admin_url)
    yield url
    pg.drop_database(postgres_admin_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hpo.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL (ids: [sqlite], [postgresql])."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that ask for PostgreSQL directly carry the marker, so `-m "not postgres"` works.
    for item in items:
        if {"postgres_url", "postgres_admin_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
