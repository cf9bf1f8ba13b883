"""The worker's report buffer: batches within the API's limit, kept while the server is unreachable."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from hpo_service.client import HpoClient
from hpo_service.errors import ServiceUnavailable
from hpo_service.workers.loop import ApiReporter

LEASE = {"trial_id": 5, "study_id": 2, "lease_token": "t", "budget_to": 10_000.0}


class Api:
    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[float]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        self.batches.append([r["step"] for r in json.loads(request.content)["reports"]])
        return httpx.Response(200, json={"directive": "continue", "expires_at": None})


def reporter(api: Api, stop: threading.Event | None = None) -> ApiReporter:
    client = HpoClient("http://fake", transport=httpx.MockTransport(api.handle), retries=0)
    return ApiReporter(client, LEASE, stop or threading.Event(), flush_seconds=3600, unreachable_wait_s=0.01)


def test_a_large_buffer_goes_in_batches_the_api_accepts() -> None:
    api = Api()
    buffered = reporter(api)
    for step in range(1, 2501):
        buffered.report(float(step), {"loss": 1.0})  # never due: flush_seconds is an hour
    buffered.flush()
    assert [len(batch) for batch in api.batches] == [1000, 1000, 500]
    assert [step for batch in api.batches for step in batch] == [float(s) for s in range(1, 2501)]


def test_reports_are_kept_while_the_server_is_unreachable_and_sent_once_it_is_back() -> None:
    api = Api()
    buffered = reporter(api)
    api.down = True
    buffered.report(1.0, {"loss": 1.0})
    buffered.flush()  # not delivered: kept, training goes on
    buffered.report(2.0, {"loss": 0.9})
    assert api.batches == []
    api.down = False
    buffered.flush(deliver=True)
    assert api.batches == [[1.0, 2.0]]


def test_a_delivering_flush_gives_up_only_when_the_worker_stops() -> None:
    api, stop = Api(), threading.Event()
    buffered = reporter(api, stop)
    api.down = True
    buffered.report(1.0, {"loss": 1.0})
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ServiceUnavailable, match="stopped while waiting"):
        buffered.flush(deliver=True)


def test_the_last_step_of_a_slice_is_sent_at_once() -> None:
    api = Api()
    buffered = reporter(api)
    buffered.report(10_000.0, {"loss": 0.1})  # the slice's last step: always due
    assert api.batches == [[10_000.0]]
