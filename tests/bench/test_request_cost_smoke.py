"""bench/request_cost.py in miniature (so that it does not rot); the cost itself is never asserted."""

from __future__ import annotations

import re

import pytest

from bench import request_cost


@pytest.mark.slow
def test_a_short_run_prints_the_cost_per_call(postgres_admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert request_cost.main(["--calls", "5", "--database-url", postgres_admin_url]) == 0
    assert re.search(r"5 calls on PostgreSQL .*: [\d.]+ ms CPU and [\d.]+ ms wall per call", capsys.readouterr().out)
