"""bench/first_proposal.py in miniature (so that it does not rot); its timings are never asserted."""

from __future__ import annotations

import re

import pytest

from bench import first_proposal


@pytest.mark.slow
def test_a_qmc_run_prints_both_sides_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert first_proposal.main(["--kinds", "qmc"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"qmc +at first proposal +\d+ +\d+ \(# ?\d+\) +[\d.]+", out), out
    assert re.search(r"qmc +ahead \(hpo-service\) +\d+ +\d+ \(# ?\d+\) +[\d.]+", out), out
    assert re.search(r"qmc +slowest lease: [\d.]+x shorter", out), out
