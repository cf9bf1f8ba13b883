"""bench/load_memory.py: growth per window of a load run, and the series read back from a report."""

from __future__ import annotations

import pytest

from bench.load_memory import growth_rows, series_from_report


@pytest.mark.parametrize(
    ("series", "window_s", "expected"),
    [
        pytest.param([], 600, [], id="no samples"),
        pytest.param([(0, 100.0)], 600, [], id="one sample"),
        pytest.param([(0, 100.0), (300, 110.0), (600, 112.0)], 600, [(0, 600, 112.0, 12.0)], id="one full window"),
        pytest.param([(0, 100.0), (600, 120.0), (1200, 121.0)], 600,
                     [(0, 600, 120.0, 20.0), (600, 1200, 121.0, 1.0)], id="filling, then flat"),
        pytest.param([(0, 100.0), (600, 120.0), (800, 119.0)], 600, [(0, 600, 120.0, 20.0)],
                     id="a last window under half a window is dropped"),
        pytest.param([(0, 100.0), (600, 120.0), (900, 119.0)], 600,
                     [(0, 600, 120.0, 20.0), (600, 900, 119.0, -1.0)], id="a last half window is kept"),
    ],
)
def test_growth_per_window(series: list[tuple[float, float]], window_s: float,
                           expected: list[tuple[float, float, float, float]]) -> None:
    assert growth_rows(series, window_s) == expected


def test_series_from_a_report_take_the_latest_run_of_each_label() -> None:
    report = "\n".join([
        "# Sustained load", "## paced-1: 1 API process(es)", "",
        "API process memory (RSS MB) over the window: server 0: 0s 143, 30s 153", "",
        "## paced-2: 2 API process(es)", "",
        "API process memory (RSS MB) over the window: server 0: 0s 140, 30s 146; server 1: 0s 138, 30s 147.5", "",
        "# Re-run", "### paced-1: 1 API process(es)", "",
        "API process memory (RSS MB) over the window: server 0: 0s 141, 30s 144, 60s 146", "",
    ])
    assert series_from_report(report) == {
        "paced-1, server 0": [(0.0, 141.0), (30.0, 144.0), (60.0, 146.0)],
        "paced-2, server 0": [(0.0, 140.0), (30.0, 146.0)],
        "paced-2, server 1": [(0.0, 138.0), (30.0, 147.5)],
    }
