"""`hpo demo`: the whole service on one machine, in about half a minute.

Starts `hpo serve` on a SQLite file, a few `hpo worker` processes, submits a
Hyperband study of the `synthetic` trainer, shows progress live and ends with the
best configuration and the brackets/rungs table. Everything runs as the real
commands a user would type, in real processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo_service.cli_render import render_best, render_rungs, render_study
from hpo_service.client import HpoClient
from hpo_service.api.startup import bootstrap_token
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings
from hpo_service.errors import ServiceUnavailable

DEMO_HOME = Path(".hpo") / "demo"

DEMO_SPEC: dict[str, Any] = {
    "name": "demo-synthetic-hyperband",
    "objective": {"metric": "loss", "direction": "minimize"},
    "search_space": "synthetic",
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 27, "eta": 3},
    "sampler": {"kind": "tpe", "seed": 7, "n_startup_trials": 8},
    "trainer": {
        "name": "synthetic",
        "params": {
            "sleep_per_unit": 0.04, "noise": 0.005,
            "optimum": {"learning_rate": 3e-3, "weight_decay": 1e-4, "dropout": 0.1, "rank": 16},
        },
    },
    "retry": {"lease_seconds": 20, "max_attempts": 3},
}

console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo_service.cli", *args]


def _wait_healthy(client: HpoClient, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo server exited with code {server.returncode}")
        try:
            client.health()
            return
        except ServiceUnavailable:
            time.sleep(0.2)
    raise RuntimeError("the demo server did not become healthy within a minute")


def _progress_line(study: dict[str, Any], started: float) -> str:
    counts = study["trial_counts"]
    states = ", ".join(f"{state} {counts[state]}" for state in sorted(counts))
    best = f"{study['best']['value']:.4f}" if study["best"] else "-"
    return (f"[{time.monotonic() - started:5.1f}s] {study['status']}: {study['trials_created']} trials "
            f"({states}); best loss {best}; budget spent {study['budget_spent']:.0f}")


def _watch(client: HpoClient, study_id: int, timeout: float) -> dict[str, Any]:
    started, last = time.monotonic(), ""
    with console.status("starting...") as status:
        while True:
            study = client.get_study(study_id)
            line = _progress_line(study, started)
            status.update(line)
            changed = line.split("]", 1)[1] != last
            if changed and not console.is_terminal:
                console.print(line, soft_wrap=True)  # one line per change when not on a terminal
            last = line.split("]", 1)[1]
            if study["status"] in ("completed", "failed", "cancelled"):
                if console.is_terminal:
                    console.print(line, soft_wrap=True)
                return study
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the demo study did not finish within {timeout:.0f} s")
            time.sleep(0.5)


def run_demo(*, workers: int = 3, port: int = 0, keep: bool = False, timeout: float = 600.0) -> int:
    DEMO_HOME.mkdir(parents=True, exist_ok=True)
    database = DEMO_HOME / "hpo.db"
    if not keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{database.resolve()}"
    upgrade(url)
    token = bootstrap_token(Settings(database_url=url), "demo admin").secret
    port = port or free_port()
    server_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HPO_DATABASE_URL": url, "HPO_TOKEN": token,
           "HPO_CHECKPOINT_URI": f"file://{(DEMO_HOME / 'checkpoints').resolve()}"}
    console.print(f"[bold]hpo demo[/bold]: server {server_url} on {database}, {workers} worker processes")
    log = (DEMO_HOME / "processes.log").open("wb")
    server = subprocess.Popen(_hpo("serve", "--port", str(port)), env=env, stdout=log, stderr=log)
    worker_group: subprocess.Popen[bytes] | None = None
    try:
        with HpoClient(server_url, token=token, retries=1) as client:
            _wait_healthy(client, server)
            worker_group = subprocess.Popen(
                _hpo("worker", "--server", server_url, "--concurrency", str(workers)),
                env=env, stdout=log, stderr=log,
            )
            spec = dict(DEMO_SPEC, name=f"{DEMO_SPEC['name']}-{int(time.time())}")
            study = client.create_study(spec)
            console.print(f"study {study['id']}: Hyperband, budget 1..27 epochs, eta 3, TPE sampler "
                          f"(worker logs in {DEMO_HOME / 'processes.log'})")
            final = _watch(client, study["id"], timeout)
            render_study(final)
            render_rungs(client.rungs(study["id"]))
            render_best(client.best_trial(study["id"]))
            console.print(f"\nmore: hpo study trials {study['id']} --server {server_url}  "
                          "(while a server runs; this one stops now)")
            return 0 if final["status"] == "completed" else 1
    finally:
        for process in (worker_group, server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (worker_group, server):
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        log.close()
