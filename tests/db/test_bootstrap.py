"""First start: the embedded server makes its own admin token; a public one refuses without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpo_service.api.startup import is_loopback, prepare_server
from hpo_service.db.migrate import upgrade
from hpo_service.errors import InvalidInput
from hpo_service.orchestration.access import hash_token
from hpo_service.settings import Settings


def hpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpo_service.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_loopback_start_writes_a_private_admin_token(sqlite_url: str, tmp_path: Path) -> None:
    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, token_file=tmp_path / "admin-token")
    written = prepare_server(settings, "127.0.0.1")
    assert written == tmp_path / "admin-token"
    assert written.read_text().startswith("hpo_") and oct(written.stat().st_mode & 0o777) == "0o600"
    assert prepare_server(settings, "127.0.0.1") is None  # only on the first start


def test_public_address_without_tokens_is_refused(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    try:
        prepare_server(Settings(database_url=sqlite_url), "0.0.0.0")
    except InvalidInput as error:
        assert "hpo db bootstrap-token" in error.message
    else:
        raise AssertionError("a public server without tokens started")
    result = hpo("serve", "--host", "0.0.0.0", "--database-url", sqlite_url, "--port", "1")
    assert result.returncode == 64 and "refusing to listen on 0.0.0.0" in result.stderr


def test_bootstrap_from_a_secret_is_idempotent(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    env = {"ADMIN_SECRET": "hpo_" + "s" * 40}
    first = hpo("db", "bootstrap-token", "--database-url", sqlite_url, "--secret-env", "ADMIN_SECRET", "--if-none",
                env=env)
    again = hpo("db", "bootstrap-token", "--database-url", sqlite_url, "--secret-env", "ADMIN_SECRET", "--if-none",
                env=env)
    assert first.returncode == again.returncode == 0, first.stderr
    assert "exists already" in again.stderr
    short = hpo("db", "bootstrap-token", "--database-url", sqlite_url, "--secret-env", "S", env={"S": "short"})
    assert short.returncode == 64 and "32 characters" in short.stderr
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///")
    hashes = [row[0] for row in sqlite3.connect(path).execute("SELECT token_hash FROM api_tokens")]
    assert hashes == [hash_token(env["ADMIN_SECRET"])]  # stored hashed, once


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.org")
