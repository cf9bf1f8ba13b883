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
