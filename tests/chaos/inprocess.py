"""The API in this process: an `HpoClient` whose requests go straight to the ASGI app.

Used for fault-free reference runs (tests/chaos/baseline.py) and for tests that need
the real worker loop without starting processes (tests/api/test_hostile_input.py).
The app runs inside Starlette's TestClient, so its lifespan (engine, expiry sweeper)
runs as in `hpo serve`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.api.startup import bootstrap_token
from hpo_service.client import HpoClient
from hpo_service.db.migrate import upgrade
from hpo_service.settings import Settings


class TestClientTransport(httpx.BaseTransport):
    """An httpx transport that hands each request to a Starlette TestClient (thread-safe)."""

    __test__ = False  # not a pytest test class

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url.raw_path.decode("ascii")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower() not in (b"host", b"content-length")]
        response = self._client.request(request.method, url, content=request.read(), headers=headers)
        return httpx.Response(response.status_code, headers=list(response.headers.items()), content=response.content)


@contextlib.contextmanager
def running_app(database_url: str, app: FastAPI | None = None, **client_options: Any) -> Iterator[tuple[TestClient, str]]:
    """A migrated database, an admin token and the app started; yields (test client, admin token)."""
    upgrade(database_url)
    settings = Settings(database_url=database_url)
    token = bootstrap_token(settings, "in-process admin").secret
    app = app or create_app(settings)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}, **client_options) as client:
        yield client, token


def sdk_client(test_client: TestClient, token: str | None, **options: Any) -> HpoClient:
    """An `HpoClient` (the SDK workers use) talking to the in-process app."""
    return HpoClient("http://testserver", token=token, transport=TestClientTransport(test_client), **options)
