"""bench/service_overhead.py in miniature, so that it does not rot: both systems, one worker, a
pre-seeded study, a few seconds. It checks that the run completes and reports sane figures;
the speed itself is measured by the benchmark, never asserted here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import service_overhead


@pytest.mark.slow
def test_a_short_run_on_a_pre_seeded_study_reports_both_systems(postgres_admin_url: str, tmp_path: Path) -> None:
    out = tmp_path / "overhead.md"
    status = service_overhead.main(["--workers", "1", "--seconds", "8", "--trials", "40", "--preseed", "200",
                                    "--window", "5", "--progress", "60", "--chart-workers", "1", "--database-url", postgres_admin_url,
                                    "--out", str(out)])
    assert status == 0
    report = out.read_text()
    assert "Each study starts with 200 finished trials already stored" in report
    results = report.split("## Results", 1)[1].split("\n\n", 2)[1]  # the first table after the heading
    rows = {m.group(1): m for m in re.finditer(r"^\| (hpo-service|optuna) \| 1 \| (\d+) \| [\d.]+ \| ([\d.]+) \|",
                                               results, re.MULTILINE)}
    assert set(rows) == {"hpo-service", "optuna"}, report
    for system, row in rows.items():
        assert int(row.group(2)) > 0 and float(row.group(3)) > 0, f"{system} finished no trial:\n{report}"
    assert (tmp_path / "overhead.png").is_file()


@pytest.mark.slow
def test_a_run_with_two_server_processes_counts_the_cpu_of_both(postgres_admin_url: str, tmp_path: Path) -> None:
    out = tmp_path / "overhead.md"
    status = service_overhead.main(["--workers", "2", "--seconds", "6", "--trials", "40", "--systems", "ours",
                                    "--server-processes", "2", "--window", "5", "--progress", "60",
                                    "--chart-workers", "2", "--database-url", postgres_admin_url, "--out", str(out)])
    assert status == 0
    report = out.read_text()
    assert "`hpo serve --processes 2` (2 API processes on one port)" in report
    cpu = report.split("### Where the CPU went", 1)[1]
    row = re.search(r"^\| hpo-service \| 2 \| ([\d.]+) \|", cpu, re.MULTILINE)
    assert row is not None, report
    # The supervisor does no request work: a positive figure means the children's CPU was counted.
    assert float(row.group(1)) > 0.05, report
