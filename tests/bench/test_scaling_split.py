"""Where a simulated run's time to the target goes (bench/methods/scaling_report.py's split), on
hand-made runs whose answer is known: the winner is the first 52-epoch result at the target, the
search before it and its own training are told apart, and Amdahl's estimate equals the measured
efficiency when the search before the winner took exactly 1/W of W = 1's time."""

from __future__ import annotations

import math

import pytest

from bench.async_scaling import ScalingRun
from bench.methods.budget import RunResult
from bench.methods.scaling_report import Scaling

TARGET = 80.0


def scaling_run(workers: int, full: list[tuple[float, float, float, int, float, int]]) -> ScalingRun:
    return ScalingRun("asha-random", "t", 0, workers, full[-1][3], len(full), full[-1][0], 0.0, full)


def study(runs: list[ScalingRun]) -> Scaling:
    random_search = RunResult("random", "t", 0, 5200, 5200, 100, 100, [(52, 70.0), (5200, TARGET)], 0.0)
    return Scaling(runs, [random_search], ["t"], sorted({r.workers for r in runs}), 1, 5200, "random")


# (seconds, accuracy, idle, epochs spent, winner's first segment at (seconds), epochs spent by then)
SEQUENTIAL = [(100.0, 70.0, 0.0, 100, 0.0, 0), (400.0, 85.0, 0.0, 400, 300.0, 300)]


@pytest.mark.parametrize(
    ("parallel", "expected"),
    [
        pytest.param([(130.0, 85.0, 0.0, 500, 75.0, 300)],
                     {"ratio": 1.0, "share": 55 / 130, "amdahl": 400 / (4 * 130), "serial": 400 / 55},
                     id="search scaled perfectly: Amdahl = measured efficiency"),
        pytest.param([(60.0, 81.0, 0.0, 350, 10.0, 150), (200.0, 90.0, 0.0, 900, 20.0, 200)],
                     {"ratio": 2.0, "share": 50 / 60, "amdahl": 400 / (4 * (75 + 50)), "serial": 400 / 50},
                     id="the first result at the target wins, not the best"),
        pytest.param([(120.0, 79.9, 0.0, 500, 0.0, 0), (300.0, 80.0, 0.0, 800, 200.0, 600)],
                     {"ratio": 0.5, "share": 100 / 300, "amdahl": 400 / (4 * (75 + 100)), "serial": 4.0},
                     id="below the target by a hair is not a winner"),
    ],
)
def test_the_split_of_the_time_to_the_target(parallel: list, expected: dict[str, float]) -> None:
    row = study([scaling_run(1, SEQUENTIAL), scaling_run(4, parallel)]).split_row("asha-random", 4)
    assert row["tasks"] == 1
    for key, value in expected.items():
        assert row[key] == pytest.approx(value), key


def test_runs_that_never_reach_the_target_are_left_out() -> None:
    never = scaling_run(4, [(500.0, 79.0, 0.0, 900, 0.0, 0)])
    row = study([scaling_run(1, SEQUENTIAL), never]).split_row("asha-random", 4)
    assert row["tasks"] == 0 and math.isnan(row["amdahl"])
    rows = study([scaling_run(1, SEQUENTIAL), never]).split_rows()
    assert rows[1][3:] == ["n/a", "n/a", "n/a", "n/a", "n/a"]
