"""bench/worker_threads.py's short version, so that it does not rot: both variants run and are reported."""

from __future__ import annotations

import os
from pathlib import Path

from bench import worker_threads
from hpo_service.workers.process import threads_per_process


def test_worker_threads_runs_both_variants(tmp_path: Path) -> None:
    out = tmp_path / "worker_threads.md"
    assert worker_threads.main(["--workers", "2", "--seconds", "0.5", "--repeat", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 2 |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    capped = threads_per_process(len(os.sched_getaffinity(0)), 2, None, {})
    assert cells[3] == str(capped)  # the capped processes really ran with the cap
    assert float(cells[2].split()[0]) > 0 and float(cells[4].split()[0]) > 0 and cells[5].endswith("x")
