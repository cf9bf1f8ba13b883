"""bench/checkpoint_gc.py in miniature (so that it does not rot); its timings are never asserted."""

from __future__ import annotations

import re

import pytest

from bench import checkpoint_gc


@pytest.mark.slow
def test_a_short_run_deletes_the_garbage_and_keeps_every_referenced_checkpoint(
        postgres_admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert checkpoint_gc.main(["--trials", "120", "--garbage-every", "40", "--database-url", postgres_admin_url]) == 0
    out = capsys.readouterr().out
    assert "store: 120 referenced checkpoints, 6 garbage folders" in out
    assert re.search(r"hpo checkpoints gc --dry-run +[\d.]+ s wall .* 6 to delete, 120 kept", out), out
    assert re.search(r"hpo checkpoints gc +[\d.]+ s wall .* 6 deleted, 120 kept", out), out
    assert "afterwards: the 120 referenced checkpoints remain, nothing else" in out
