"""Schema migrations (Alembic) and the start-up check that refuses an old schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations
from hpo_service.db.engine import make_engine, normalize_url
from hpo_service.errors import SchemaOutdated

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check_schema(engine: Engine) -> None:
    """Raise SchemaOutdated unless the database is at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = "is empty" if current is None else f"is at revision {current}"
    raise SchemaOutdated(
        f"the database {where}, but this version of hpo-service needs revision {head}; "
        f"run `hpo db upgrade` (with the same HPO_DATABASE_URL) and start again"
    )


def upgrade_if_needed(url: str) -> None:
    engine = make_engine(url)
    try:
        needs = current_revision(engine) != head_revision()
    finally:
        engine.dispose()
    if needs:
        upgrade(url)
