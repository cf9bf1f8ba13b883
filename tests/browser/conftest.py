"""Browser tests: headless Chromium (Debian's, driven by Playwright) against a live `hpo serve`
on a seeded database. Screenshots go to test-artifacts/screenshots/ (and to docs/screenshots/
with HPO_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.seeding import Seeded, seed_demo
from tests.e2e.harness import Processes

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("HPO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class LiveServer:
    url: str
    database_url: str
    studies: dict[str, Seeded]
    processes: Processes

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.processes.token}"}


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{tmp / 'dashboard.db'}"
    studies = seed_demo(database_url)
    processes = Processes(tmp, database_url)
    try:
        yield LiveServer(processes.server(), database_url, studies, processes)
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set HPO_CHROMIUM); "
                    "the browser tests use Debian's Chromium, never `playwright install`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install 'playwright>=1.45' (a dev dependency)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """Console messages and uncaught errors of one page; any error fails the test."""

    def __init__(self, page: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        page.on("console", lambda message: self.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.messages.append(("pageerror", str(error))))

    def errors(self, allowed: list[str]) -> list[tuple[str, str]]:
        return [m for m in self.messages
                if m[0] in ("error", "pageerror") and not any(a in m[1] for a in allowed)]


@pytest.fixture
def expected_console_errors() -> list[str]:
    """Substrings of console errors a test provokes on purpose (e.g. a 404 it asks for)."""
    return []


@pytest.fixture
def signed_out(browser: Any, live_server: LiveServer, expected_console_errors: list[str]) -> Iterator[Any]:
    """A browser context without a session."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light",
                                  base_url=live_server.url)
    consoles: list[Console] = []
    context.on("page", lambda tab: consoles.append(Console(tab)))
    yield context
    context.close()
    errors = [e for console in consoles for e in console.errors(expected_console_errors)]
    assert not errors, f"console errors: {errors}"


@pytest.fixture
def page(signed_out: Any, live_server: LiveServer) -> Iterator[Any]:
    """A tab signed in with the server's admin token (kept in the dashboard's HttpOnly cookie)."""
    response = signed_out.request.post("/api/v1/session", data={"token": live_server.processes.token})
    assert response.ok, response.text()
    tab = signed_out.new_page()
    tab.set_default_timeout(20_000)
    yield tab


def screenshot(page: Any, name: str, docs: bool = True) -> Path:
    """A full-page screenshot in test-artifacts/screenshots (and, for ``docs``, in docs/screenshots
    with HPO_UPDATE_SCREENSHOTS=1)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("HPO_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / path.name)
    return path


def wait_until(page: Any, expression: str, arg: Any = None, timeout: float = 20.0) -> Any:
    """Poll a JavaScript function until it returns something truthy. (Playwright's wait_for_function
    compiles its predicate with eval, which the dashboard's Content-Security-Policy forbids, as it
    should; page.evaluate goes through the debugger protocol instead.)"""
    deadline = time.monotonic() + timeout
    while True:
        result = page.evaluate(expression, arg)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {expression}")
        page.wait_for_timeout(100)


def chart_series(page: Any, test_id: str) -> list[dict[str, Any]]:
    """(name, type, points) of each series of the ECharts chart in [data-testid=test_id]."""
    page.wait_for_selector(f"[data-testid={test_id}] canvas")
    return page.evaluate(
        """id => echarts.getInstanceByDom(document.querySelector(`[data-testid=${id}]`)).getOption().series
               .map(s => ({name: s.name, type: s.type, points: (s.data || []).length}))""",
        test_id,
    )
