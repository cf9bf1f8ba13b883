"""Real `hpo serve` and `hpo worker` processes that a chaos scenario can kill, freeze and restart.

Every process gets its own log file in the scenario's folder. Servers keep their port
across restarts, so workers (configured with a URL) find a restarted server again.
`close()` always leaves nothing behind: frozen processes are resumed before they are
stopped, and PostgreSQL is never left refusing connections (see `pg_outage`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from hpo_service.api.startup import bootstrap_token
from hpo_service.client import HpoClient
from hpo_service.errors import HpoError, ServiceUnavailable
from hpo_service.settings import Settings
from tests.e2e.harness import free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

# A traceback in a server log means a request failed uncleanly (an exception reached the ASGI
# server), except after this line: the expiry sweeper logs the outage it survives.
TRACEBACK = "Traceback (most recent call last)"
HANDLED_BEFORE_TRACEBACK = ("lease expiry sweep failed; retrying",)
# Lines in a worker log that mean the server answered 5xx other than a clean 503.
WORKER_ERROR_PATTERN = re.compile(r"HTTP 5(?!03)\d\d")


@dataclass
class Proc:
    name: str
    kind: str  # "server" | "worker"
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    frozen: bool = False
    killed_on_purpose: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def worker_id(self) -> str:
        """What `hpo worker` (one process) calls itself in leases: host-pid."""
        return f"{socket.gethostname()}-{self.pid}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Cluster:
    """The processes of one scenario, on one PostgreSQL database."""

    folder: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.folder / "checkpoints"
        self.token = bootstrap_token(Settings(database_url=self.database_url), "chaos admin").secret
        self.env = {
            **os.environ, "HPO_DATABASE_URL": self.database_url, "HPO_TOKEN": self.token,
            "HPO_CHECKPOINT_URI": self.checkpoints.as_uri(), "PYTHONUNBUFFERED": "1",
            "HPO_TOKEN_FILE": str(self.folder / "admin-token"), **self.extra_env,
        }

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, name: str, kind: str, args: list[str], port: int | None = None) -> Proc:
        log = self.folder / f"{name}.log"
        with log.open("ab") as handle:  # appended: a restarted server keeps one log
            popen = subprocess.Popen([sys.executable, "-m", "hpo_service.cli", *args], env=self.env, cwd=REPO_ROOT,
                                     stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, kind, popen, log, port)
        self.processes.append(proc)
        return proc

    def start_server(self, port: int | None = None, timeout: float = 90.0) -> str:
        port = port or free_port()
        proc = self._spawn(f"server-{port}", "server", ["serve", "--port", str(port)], port)
        url = f"http://127.0.0.1:{port}"
        with HpoClient(url, token=self.token, retries=0, timeout=5) as client:
            def healthy() -> bool:
                if not proc.alive():
                    raise RuntimeError(f"server on port {port} exited:\n{proc.log_text()[-3000:]}")
                try:
                    return bool(client.health())
                except HpoError:
                    return False
            wait_for(healthy, timeout, f"the server on port {port} to answer")
        return url

    def server(self, port: int) -> Proc:
        return next(p for p in reversed(self.processes) if p.kind == "server" and p.port == port)

    def kill_server(self, port: int) -> None:
        proc = self.server(port)
        proc.killed_on_purpose = True
        _signal(proc, signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def start_worker(self, server_url: str, name: str | None = None) -> Proc:
        count = sum(p.kind == "worker" for p in self.processes)
        return self._spawn(name or f"worker-{count}", "worker", ["worker", "--server", server_url])

    def workers(self, *, alive: bool = True) -> list[Proc]:
        return [p for p in self.processes if p.kind == "worker" and (p.alive() or not alive)]

    def kill(self, proc: Proc) -> None:
        proc.killed_on_purpose = True
        _signal(proc, signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def freeze(self, proc: Proc) -> None:
        proc.frozen = True
        _signal(proc, signal.SIGSTOP)

    def thaw(self, proc: Proc) -> None:
        _signal(proc, signal.SIGCONT)
        proc.frozen = False

    def by_worker_id(self, worker_id: str) -> Proc | None:
        return next((p for p in self.processes if p.kind == "worker" and p.worker_id == worker_id), None)

    def client(self, url: str, **options: Any) -> HpoClient:
        options = {"retries": 10, "timeout": 30.0, **options}
        return HpoClient(url, token=self.token, **options)

    def close(self) -> None:
        for proc in self.processes:
            if proc.frozen:
                with contextlib.suppress(ProcessLookupError):
                    self.thaw(proc)
        for proc in self.processes:
            if proc.alive():
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.popen.wait()

    # --- what went wrong, from the logs -----------------------------------------------------

    def unexpected_exits(self) -> list[str]:
        return [f"{p.name} exited with {p.popen.returncode}: {p.log_text()[-800:]}"
                for p in self.processes if not p.alive() and not p.killed_on_purpose]

    def log_problems(self) -> list[str]:
        problems = []
        for proc in self.processes:
            text = proc.log_text()
            if proc.kind == "server" and (start := _unhandled_traceback(text)) is not None:
                problems.append(f"{proc.name}: unhandled exception:\n{text[max(0, start - 200):start + 2500]}")
            if proc.kind == "worker" and (match := WORKER_ERROR_PATTERN.search(text)):
                problems.append(f"{proc.name}: server error seen by the worker: "
                                f"{text[max(0, match.start() - 300):match.start() + 300]}")
        return problems


def _unhandled_traceback(text: str) -> int | None:
    """Where the first traceback that no handler announced starts, if any."""
    handled = False
    start = text.find(TRACEBACK)
    while start != -1:
        previous_line = text[:start].rstrip("\n").rsplit("\n", 1)[-1]
        chained = "above exception" in previous_line  # the rest of one chain keeps its first part's status
        handled = handled if chained else any(marker in previous_line for marker in HANDLED_BEFORE_TRACEBACK)
        if not handled:
            return start
        start = text.find(TRACEBACK, start + 1)
    return None


def _signal(proc: Proc, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)  # its own session: the worker's children (if any) too


# --- PostgreSQL outages -----------------------------------------------------------------------


def local_cluster(admin_url: str) -> tuple[str, str] | None:
    """(version, name) of the Debian cluster serving ``admin_url`` on this machine, if we may restart it."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None or os.geteuid() != 0:
        return None
    info = psycopg.conninfo.conninfo_to_dict(re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", admin_url))
    if info.get("host") not in ("127.0.0.1", "localhost", None) or str(info.get("port", "5432")) == "":
        return None
    port = str(info.get("port", "5432"))
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == port and parts[3] == "online":
            return parts[0], parts[1]
    return None


def pg_outage_mode(admin_url: str) -> str:
    """``cluster`` (a real restart) or ``database`` (this database refuses and drops connections).

    HPO_CHAOS_PG_RESTART=cluster|database forces one. By default a real restart only when this
    process may restart a local cluster and is not one of several pytest-xdist workers: a
    restart cuts every other test's connections too.
    """
    forced = os.environ.get("HPO_CHAOS_PG_RESTART", "auto")
    if forced in ("cluster", "database"):
        return forced
    if local_cluster(admin_url) is not None and "PYTEST_XDIST_WORKER" not in os.environ:
        return "cluster"
    return "database"


@contextlib.contextmanager
def _admin(admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    url = re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", admin_url)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        yield conn


def pg_outage(admin_url: str, database: str, mode: str, outage_s: float = 2.0) -> float:
    """Take PostgreSQL away from ``database`` and bring it back; returns how long it was gone (s).

    ``cluster``: `pg_ctlcluster ... restart` (fast shutdown: every session is cut). ``database``:
    refuse new connections to the database, terminate its sessions, wait ``outage_s``, allow again
    -- what the service sees is the same (sessions cut with 57P01, connection attempts refused).
    Either way the server is never left down.
    """
    start = time.monotonic()
    if mode == "cluster":
        cluster = local_cluster(admin_url)
        assert cluster is not None, "no local cluster to restart"
        version, name = cluster
        try:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"],
                           check=True, capture_output=True, timeout=120)
        finally:
            _ensure_cluster_up(version, name)
        wait_for(lambda: _can_connect(admin_url), 60, "PostgreSQL to accept connections again")
        return time.monotonic() - start
    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
        try:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            time.sleep(outage_s)
        finally:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(database)))
    return time.monotonic() - start


def _ensure_cluster_up(version: str, name: str) -> None:
    status = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "status"],
                            capture_output=True, check=False)
    if status.returncode != 0:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
                       capture_output=True, check=False, timeout=120)


def _can_connect(admin_url: str) -> bool:
    try:
        with _admin(admin_url) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def wait_healthy(client: HpoClient, timeout: float = 60.0) -> None:
    def ok() -> bool:
        try:
            return bool(client.health())
        except (ServiceUnavailable, HpoError):
            return False
    wait_for(ok, timeout, "the server to answer")
