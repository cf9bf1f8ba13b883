"""bench/request_cost.py in miniature (so that it does not rot); the cost itself is never asserted."""

from __future__ import annotations

import re

import pytest

from bench import request_cost


@pytest.mark.slow
def test_a_short_run_prints_the_cost_per_call_in_process_and_over_http(
        postgres_admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert request_cost.main(["--calls", "5", "--database-url", postgres_admin_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 calls each, one step per report, PostgreSQL ")
    for label in ("TrialProtocol.report, in process", "POST /trials/{id}/reports over HTTP", "GET /api/v1/health"):
        assert re.search(re.escape(label) + r".* [\d.]+ ms CPU +[\d.]+ ms wall per call", out), label
    assert re.search(r"the HTTP stack adds -?[\d.]+ ms of server CPU per report", out)
