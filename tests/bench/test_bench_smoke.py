"""The benchmarks' short version, so that they do not rot: the budget rules, the metrics, the two
drivers of hpo-service's methods making the same decisions, and both scripts end to end on two
tasks, one seed and a small budget (the full runs are not part of the suite: README, Benchmarks).

Skipped without onnxruntime or without the LCBench data in ../shared/benchdata/yahpo/lcbench.
DEHB needs numpy<2 and runs only in bench/.venv; elsewhere the scripts leave it out and say so.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from bench import async_scaling, sample_efficiency  # noqa: E402
from bench.lcbench import DATA_DIR, MAX_EPOCHS, LCBench  # noqa: E402
from bench.methods import anchors, deepening, metrics  # noqa: E402
from bench.methods.budget import Ledger, TaskObjective, epochs_of  # noqa: E402
from bench.methods.service import MemoryBackend, ServiceBackend, run_sequential, study_spec  # noqa: E402

pytestmark = pytest.mark.skipif(not (DATA_DIR / "model.onnx").is_file(), reason=f"no surrogate in {DATA_DIR}")

SMALL = 8 * MAX_EPOCHS  # 8 full trainings


@pytest.fixture(scope="module")
def bench() -> LCBench:
    return LCBench()


def test_rung_budgets_become_whole_epochs() -> None:
    # min 1, max 52, eta 3: rungs at 52/27, 52/9, 52/3, 52.
    assert [epochs_of(52 / 3**k) for k in (3, 2, 1, 0)] == [2, 6, 18, 52]
    assert epochs_of(0.0) == 0


def test_the_ledger_charges_new_epochs_and_records_only_full_trainings() -> None:
    ledger = Ledger(total_epochs=60)
    ledger.charge(2, 2, 70.0)
    ledger.charge(4, 6, 80.0)  # resumed from epoch 2: pays 4
    ledger.charge(46, 52, 90.0)
    assert (ledger.spent, ledger.evaluations, ledger.full) == (52, 3, [(52, 90.0)])
    assert ledger.fits(8) and not ledger.fits(9)
    with pytest.raises(ValueError):
        ledger.charge(9, 9, 1.0)


def test_metrics() -> None:
    record = [(10, 80.0), (20, 85.0), (30, 84.0), (40, 90.0)]
    assert metrics.cost_to_reach(record, 85.0) == 20 and math.isinf(metrics.cost_to_reach(record, 95.0))
    assert list(metrics.best_at(record, [5, 10, 35])[1:]) == [80.0, 85.0]
    assert math.isnan(metrics.best_at(record, [5])[0])
    assert metrics.median([3.0, math.inf, 1.0]) == 3.0 and math.isinf(metrics.median([1.0, math.inf]))
    assert metrics.median_low([4.0, 1.0, 3.0, 2.0]) == 2.0 and metrics.median_low([3.0, 1.0, 2.0]) == 2.0
    assert metrics.speedup(100, 50) == 2.0 and metrics.speedup(100, math.inf) == 0.0
    assert math.isnan(metrics.speedup(math.inf, math.inf))
    assert metrics.average_ranks({"a": 1.0, "b": math.inf, "c": math.inf}) == {"a": 1.0, "b": 2.5, "c": 2.5}


def test_asking_the_pruner_only_at_its_rungs_is_asking_every_epoch(bench: LCBench,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    objective = TaskObjective(bench, bench.tasks[5])
    at_rungs = Ledger(SMALL)
    anchors.run_tpe_hyperband(objective, at_rungs, seed=3)
    monkeypatch.setattr(anchors, "PRUNER_EPOCHS", tuple(range(1, MAX_EPOCHS + 1)))
    every_epoch = Ledger(SMALL)
    anchors.run_tpe_hyperband(objective, every_epoch, seed=3)
    assert every_epoch == at_rungs and at_rungs.evaluations > SMALL // MAX_EPOCHS  # some trials were pruned


# The other two combinations are compared run by run in test_sample_efficiency_short (--service-check).
@pytest.mark.parametrize("scheduler, sampler", [("hyperband", "tpe"), ("asha", "random")])
def test_the_memory_driver_makes_the_services_decisions(bench: LCBench, tmp_path: Path, scheduler: str,
                                                        sampler: str) -> None:
    """Every lease (trial, budget_from, budget_to) and result, in order, through HTTP + SQLite and in memory."""
    spec = study_spec("smoke", scheduler, sampler, 11, bench.search_space(), float(SMALL))
    objective = TaskObjective(bench, bench.tasks[3])
    in_memory: list[tuple[int, float, float, float]] = []
    through_service: list[tuple[int, float, float, float]] = []
    memory_ledger, service_ledger = Ledger(SMALL), Ledger(SMALL)
    run_sequential(MemoryBackend(spec), objective, memory_ledger, in_memory)
    with ServiceBackend(spec, tmp_path) as service:
        run_sequential(service, objective, service_ledger, through_service)
    assert through_service == in_memory
    assert service_ledger == memory_ledger
    # A promoted trial resumed (run_sequential checks its checkpoint) and paid only its new epochs.
    resumed = [(a, b) for _, a, b, _ in in_memory if a > 0]
    assert resumed if scheduler == "hyperband" else True
    assert memory_ledger.spent == sum(epochs_of(b) - epochs_of(a) for _, a, b, _ in in_memory)


def test_iterative_deepening_sizes_its_study_from_the_budget_alone() -> None:
    # 52/9 -> 52/3 -> 52, each raise eta-fold, ending exactly on the surrogate's last epoch.
    assert deepening.LADDER[-1] == MAX_EPOCHS and [epochs_of(b) for b in deepening.LADDER] == [6, 18, 52]
    assert all(math.isclose(b / a, 3) for a, b in zip(deepening.LADDER, deepening.LADDER[1:]))
    # One sweep of the deepened ladder: 22 + 116 + 560 epochs, a fresh sweep at 52's 698, since every raise
    # tops the old brackets up to the larger Hyperband's sizes (see the module docstring of deepening.py).
    assert deepening.hyperband_sweep_cost() == 698
    assert deepening.hyperband_iterations(5200) == 8 and deepening.hyperband_iterations(1) == 1


def test_iterative_deepening_through_the_service_and_in_memory(bench: LCBench, tmp_path: Path) -> None:
    """Raised twice when the study completes (PATCH max_budget through HTTP + SQLite, extend in memory): the
    same leases in the same order, continued trials resume at the old top and pay only their new epochs."""
    total = 12 * MAX_EPOCHS  # 2 sweeps: the last stage is cut by the budget
    spec = study_spec("smoke-id", "hyperband", "tpe", 5, bench.search_space(), float(total),
                      max_budget=deepening.LADDER[0], iterations=deepening.hyperband_iterations(total))
    objective = TaskObjective(bench, bench.tasks[2])
    traces: list[list[tuple[int, float, float, float]]] = [[], []]
    ledgers = [Ledger(total), Ledger(total)]
    raises = deepening.deepen(MemoryBackend(spec), objective, ledgers[0], trace=traces[0])
    with ServiceBackend(spec, tmp_path) as service:
        assert deepening.deepen(service, objective, ledgers[1], trace=traces[1]) == raises == 2
    assert traces[1] == traces[0] and ledgers[1] == ledgers[0]
    continued = [a for _, a, _, _ in traces[0] if a > 0]
    assert any(math.isclose(a, deepening.LADDER[0]) for a in continued)  # from the first study's top
    assert any(math.isclose(a, deepening.LADDER[1]) for a in continued)  # from the second's
    assert ledgers[0].spent == sum(epochs_of(b) - epochs_of(a) for _, a, b, _ in traces[0])
    assert ledgers[0].full and not ledgers[0].fits(MAX_EPOCHS)  # it reached 52 and spent the budget


def test_sample_efficiency_short(tmp_path: Path) -> None:
    out = tmp_path / "sample_efficiency.md"
    code = sample_efficiency.main(["--tasks", "2", "--seeds", "1", "--budget", "6", "--service-check", "1",
                                   "--jobs", "1", "--no-cache", "--out", str(out)])
    assert code == 0
    report = out.read_text()
    for method in ("hyperband-tpe", "asha-tpe", "hyperband-random", "asha-random", "iterative-deepening", "random",
                   "optuna-tpe", "optuna-tpe-hyperband"):
        assert f"| {method} |" in report
    assert "Goal 1" in report and "Goal 2" in report
    assert "5 of 5 runs redone through the real service" in report
    assert "iterative-deepening on" in report


def test_async_scaling_short(tmp_path: Path) -> None:
    out = tmp_path / "async_scaling.md"
    code = async_scaling.main(["--tasks", "1", "--seeds", "1", "--budget", "8", "--workers", "1", "4",
                               "--jobs", "1", "--no-cache", "--out", str(out)])
    assert code == 0
    report = out.read_text()
    assert "| hyperband-random | 4 |" in report and "| asha-random | 4 |" in report
    assert "reused" not in report.splitlines()[2]  # --no-cache: nothing came from the cache


def test_the_fastest_training_to_a_target_is_a_monotone_limit() -> None:
    bench = LCBench()
    task = bench.tasks[0]
    lowest = async_scaling.fastest_to_target(bench, task, target=0.0, samples=300)
    middle = async_scaling.fastest_to_target(bench, task, target=70.0, samples=300)
    high = async_scaling.fastest_to_target(bench, task, target=90.0, samples=300)
    assert 0 < lowest <= middle < high < math.inf  # a higher target needs a slower (or the same) configuration
    assert math.isinf(async_scaling.fastest_to_target(bench, task, target=101.0, samples=300))  # accuracy is in %
    # The same sample every time: the limit is reproducible.
    assert async_scaling.fastest_to_target(bench, task, target=70.0, samples=300) == middle
