"""Shared helpers for the benchmarks in bench/: databases, the server process, rates, reports.

Nothing here is timed itself; it sets up and tears down what a benchmark measures.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the root, on sys.path
    sys.path.insert(0, str(REPO_ROOT))


# --- PostgreSQL ---------------------------------------------------------------------------


def admin_url(explicit: str | None) -> str:
    """The server to create throwaway databases on: ``explicit``, else the test suite's resolution
    (HPO_TEST_DATABASE_URL, the local server on 127.0.0.1:5432, or an embedded PostgreSQL)."""
    from tests.support import postgres as pg

    return explicit or pg.postgres_admin_url()


@contextlib.contextmanager
def throwaway_database(admin: str) -> Iterator[str]:
    """A fresh, empty database (``postgresql+psycopg://`` URL), dropped on exit, Ctrl-C included."""
    from tests.support import postgres as pg

    url = pg.create_throwaway_database(admin)
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            pg.drop_database(admin, url)


def server_version(admin: str) -> str:
    import psycopg

    from tests.support.postgres import libpq_url

    with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


PG_STAT_COLUMNS = ("sessions", "xact_commit", "xact_rollback", "active_time", "tup_inserted", "tup_updated",
                   "tup_returned", "blks_hit", "blks_read")


def database_stats(admin: str, database: str) -> dict[str, float]:
    """Cumulative counters of one database from pg_stat_database (PostgreSQL 14+ for sessions and
    active_time; missing columns read 0). Backends flush them at most once a second and when they
    exit, so read them after the connections closed for exact totals."""
    import psycopg

    from tests.support.postgres import libpq_url

    with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=10) as conn:
        have = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'pg_stat_database'")}
        columns = [c for c in PG_STAT_COLUMNS if c in have]
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(f"SELECT {', '.join(columns)} FROM pg_stat_database WHERE datname = %s",
                           (database,)).fetchone()
    values = dict(zip(columns, row)) if row else {}
    return {c: float(values.get(c) or 0) for c in PG_STAT_COLUMNS}


def database_name(url: str) -> str:
    from tests.support.postgres import database_name as _name

    return _name(url)


def redact(url: str) -> str:
    from tests.support.postgres import redact as _redact

    return _redact(url)


# --- the `hpo serve` process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hpo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo_service.cli", *args]


def db_upgrade(url: str) -> None:
    """`hpo db upgrade --database-url URL`, as a user runs it."""
    result = subprocess.run(hpo_command("db", "upgrade", "--database-url", url), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"hpo db upgrade failed ({result.returncode}): {result.stdout}{result.stderr}")


def bootstrap_token(url: str, directory: Path) -> str | None:
    """An admin token made with `hpo db bootstrap-token` (as a user sets up a server), or None when
    this version of hpo-service has no such command (no authentication)."""
    path = directory / "bench-admin-token"
    result = subprocess.run(hpo_command("db", "bootstrap-token", "--database-url", url, "--name", "bench",
                                        "--out", str(path)),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        if "No such command" in result.stdout + result.stderr:
            return None
        raise RuntimeError(f"hpo db bootstrap-token failed ({result.returncode}): {result.stdout}{result.stderr}")
    return path.read_text().strip()


def client(server: str, token: str | None, **kwargs: Any) -> Any:
    """An HpoClient, with the token when there is one (older clients take no `token`)."""
    from hpo_service.client import HpoClient

    return HpoClient(server, token=token, **kwargs) if token else HpoClient(server, **kwargs)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def hpo_server(database_url: str, log_path: Path, start_timeout: float = 60.0, processes: int = 1) -> Iterator[Server]:
    """`hpo serve --port P --database-url URL [--processes N]` in its own session (Ctrl-C reaches only us);
    stopped on exit."""
    from hpo_service.client import HpoClient
    from hpo_service.errors import ServiceUnavailable

    port = free_port()
    # An admin token the server may create on first start goes next to its log, not into ./.hpo.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HPO_TOKEN_FILE": str(log_path.with_suffix(".token"))}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            hpo_command("serve", "--port", str(port), "--database-url", database_url,
                        *(["--processes", str(processes)] if processes > 1 else [])),
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        with HpoClient(server.url, retries=0, timeout=5.0) as client:
            deadline = time.monotonic() + start_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"hpo serve exited with {process.returncode}:\n{server.log_tail()}")
                try:
                    client.health()
                    break
                except ServiceUnavailable:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"hpo serve did not answer within {start_timeout:.0f}s") from None
                    time.sleep(0.1)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- CPU accounting (Linux /proc; zeros elsewhere) ----------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0.0 when it is gone or /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15 of stat)


def process_tree_cpu_seconds(pid: int) -> float:
    """``process_cpu_seconds`` of a process and all its live descendants (`hpo serve --processes N`
    is a supervisor and N children). A descendant that exits takes its time with it."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])  # ppid, field 4 of stat
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += process_cpu_seconds(current)
        todo.extend(children.get(current, []))
    return total


def postgres_cpu_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``database`` (found by their process title,
    `postgres: [CLUSTER:] USER DATABASE HOST ...`; the server must be on this machine, else 0.0).

    Only backends: the server's shared processes (WAL writer, checkpointer) also work for other
    databases on the server. Backends that exit between two readings take their time with them, so
    differences of this are a lower bound; pooled connections live for a whole run, so little is lost."""
    total = 0.0
    proc = Path("/proc")
    if not proc.is_dir():
        return 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        if title and title[0] == "postgres:" and database in title[1:5]:
            total += process_cpu_seconds(int(entry.name))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine spent busy (not idle or waiting for I/O), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS  # user..steal; guest time is already inside user


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --- rates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    first: int  # 1-based number of the first trial in the window
    last: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.last - self.first + 1) / self.seconds if self.seconds > 0 else float("inf")


def window_rates(times: Sequence[float], window: int) -> tuple[list[Window], Window | None]:
    """Full windows of ``window`` completions (trials/s within each) and the partial rest, if any.

    ``times`` are completion times in seconds since the start, sorted; a window runs from the
    completion that ended the previous one (or the start) to its own last completion."""
    full: list[Window] = []
    start = 0.0
    count = len(times)
    for k in range(count // window):
        end = times[(k + 1) * window - 1]
        full.append(Window(k * window + 1, (k + 1) * window, end - start))
        start = end
    rest = count % window
    partial = Window(count - rest + 1, count, times[-1] - start) if rest else None
    return full, partial


# --- output -------------------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-markdown table; ``align`` is one of 'l'/'r' per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def cpu_count() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM (a job stopped from outside) cleans up like Ctrl-C: processes stopped, databases dropped."""
    signal.signal(signal.SIGTERM, _interrupt)
