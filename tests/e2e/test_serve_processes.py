"""`hpo serve --processes N`: uvicorn's workers each build the app through
`hpo_service.api.startup:create_served_app` (app made, start-up heap frozen), and serve."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hpo_service.db.migrate import upgrade
from tests.e2e.harness import Processes

pytestmark = pytest.mark.slow


def test_two_api_processes_serve_the_api_and_the_dashboard(tmp_path: Path, postgres_url: str) -> None:
    upgrade(postgres_url)
    processes = Processes(tmp_path, postgres_url)
    try:
        url = processes.server("--processes", "2")
        with processes.client(url) as client:
            for _ in range(20):  # the kernel spreads the connections over both processes
                assert client.health()
            assert client.list_studies()["items"] == []
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and 'id="echarts-lib"' in page.text
    finally:
        processes.stop_all()
