"""Real processes for end-to-end tests: `hpo serve` and `hpo worker`, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo_service.api.startup import bootstrap_token
from hpo_service.client import HpoClient
from hpo_service.errors import ServiceUnavailable
from hpo_service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Processes:
    """Starts and always cleans up the processes of one test; logs go to the test's tmp folder."""

    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.token = bootstrap_token(Settings(database_url=database_url), "e2e admin").secret
        self.env = {**os.environ, "HPO_DATABASE_URL": database_url, "HPO_TOKEN": self.token,
                    "HPO_CHECKPOINT_URI": f"file://{tmp / 'checkpoints'}", "PYTHONUNBUFFERED": "1"}
        self.running: list[subprocess.Popen[bytes]] = []
        self.servers: dict[str, subprocess.Popen[bytes]] = {}  # url -> its process

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen([sys.executable, "-m", "hpo_service.cli", *args], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT)
        self.running.append(process)
        return process

    def server(self, *extra: str, port: int | None = None) -> str:
        """An API server, started and healthy; on ``port`` (a restart) or a free one."""
        port = port or free_port()
        name = f"server-{port}"
        if (self.tmp / f"{name}.log").exists():  # a restart on the same port keeps the first log
            name += f"-{len(self.running)}"
        process = self._start(name, "serve", "--port", str(port), *extra)
        url = f"http://127.0.0.1:{port}"
        with HpoClient(url, token=self.token, retries=0) as client:
            def healthy() -> bool:
                assert process.poll() is None, f"server exited: {self.log(name)}"
                try:
                    return bool(client.health())
                except ServiceUnavailable:
                    return False
            wait_for(healthy, 30, "the server to start")
        self.servers[url] = process
        return url

    def client(self, server: str) -> HpoClient:
        return HpoClient(server, token=self.token)

    def worker(self, server: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
        return self._start(name, "worker", "--server", server, *extra)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_id_of(process: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}-{process.pid}"
