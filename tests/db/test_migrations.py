"""Migrations are the real history of the models; the server refuses an old schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hpo_service.db.engine import make_engine
from hpo_service.db.migrate import check_schema, current_revision, head_revision, upgrade
from hpo_service.db.models import Base
from hpo_service.errors import SchemaOutdated


def test_upgraded_database_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"models and migrations disagree; add a migration: {diff}"
        assert current_revision(engine) == head_revision()
        check_schema(engine)
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    upgrade(database_url)
    from alembic import command

    from hpo_service.db.migrate import alembic_config

    command.downgrade(alembic_config(database_url), "base")
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        upgrade(database_url)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_empty_database_is_refused_with_the_fix(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with pytest.raises(SchemaOutdated, match="hpo db upgrade"):
            check_schema(engine)
    finally:
        engine.dispose()


def test_serve_refuses_to_start_on_an_old_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "hpo_service.cli", "serve", "--database-url", url, "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 64
    assert "hpo db upgrade" in result.stderr


def test_0006_keeps_the_oldest_grant_of_a_request_that_was_granted_twice(database_url: str) -> None:
    """Before 0006 a request could be granted two trials; the upgrade keeps both leases and
    forgets the key of the newer one so that the unique index can be built."""
    from alembic import command
    from sqlalchemy import text

    from hpo_service.db.migrate import alembic_config
    from tests.db.conftest import FakeClock, Service
    from tests.db.test_protocol_contract import make_spec

    upgrade(database_url)
    service = Service(database_url, FakeClock())
    try:
        service.studies.create(make_spec())
        older = service.protocol.lease("w1", request_key="key-1")
        newer = service.protocol.lease("w1", request_key="key-2")
        assert older is not None and newer is not None
        command.downgrade(alembic_config(database_url), "0005_lease_requests")
        with service.context.engine.begin() as connection:  # what the race left behind
            connection.execute(text("UPDATE trials SET lease_request = 'key-1'"))

        upgrade(database_url)

        with service.context.engine.connect() as connection:
            rows = connection.execute(text("SELECT id, state, lease_request FROM trials ORDER BY id")).all()
        assert [tuple(row) for row in rows] == [(older.trial.id, "running", "key-1"),
                                               (newer.trial.id, "running", None)]
    finally:
        service.context.engine.dispose()
