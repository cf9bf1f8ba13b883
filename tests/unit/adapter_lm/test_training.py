"""The trainer end to end on the tiny model: every kind learns; resume is exact; errors are typed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from hpo_service.workers.registry import load_trainer
from hpo_service.workers.trainer import CheckpointError, TrainerError
from tests.unit.adapter_lm.helpers import KIND_PARAMS, Recorder, run_slice
from trainers.adapter_lm import METRICS, TRAINER
from trainers.adapter_lm.checkpoint import ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE

DETERMINISTIC = ("train_loss", "eval_loss", "eval_perplexity", "trainable_params")


def test_the_trainer_is_registered_and_declares_its_metrics() -> None:
    assert load_trainer("adapter_lm") is TRAINER
    assert TRAINER.name == "adapter_lm" and TRAINER.supports_mup is False
    assert {"eval_loss", "train_loss", "eval_perplexity", "tokens_per_s", "trainable_params",
            "peak_memory_mb"} == set(METRICS)


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_every_adapter_kind_trains_and_its_eval_loss_goes_down(
    tmp_path: Path, make_config: Callable[..., Any], kind: str
) -> None:
    config = make_config(adapter=kind, max_budget=8, report_every=4)
    result, recorder, out = run_slice(tmp_path, config, KIND_PARAMS[kind], 0, 8)
    eval_losses = [metrics["eval_loss"] for _, metrics in recorder.reports]
    assert [step for step, _ in recorder.reports] == [4.0, 8.0]
    assert eval_losses[-1] < eval_losses[0], eval_losses
    assert set(result.metrics) == set(METRICS) and result.budget_done == 8
    assert result.metrics["trainable_params"] > 0 and result.metrics["tokens_per_s"] > 0
    assert (out / STATE_FILE).is_file() and (out / "export" / "adapter_config.json").is_file()
    assert any("train_loss" in line and "tokens/s" in line for line in recorder.logs)


def _assert_same_run(whole: Recorder, *parts: Recorder) -> None:
    split = [report for part in parts for report in part.reports]
    whole_grid = {step: m for step, m in whole.reports}
    for step, metrics in split:
        if step in whole_grid:
            assert {k: metrics[k] for k in DETERMINISTIC} == {k: whole_grid[step][k] for k in DETERMINISTIC}, step
    assert split[-1][0] == whole.reports[-1][0]


def _same_tensors(a: Path, b: Path, name: str) -> None:
    left, right = load_file(str(a / name)), load_file(str(b / name))
    assert left.keys() == right.keys()
    assert all((left[k] == right[k]).all() for k in left), name


@pytest.mark.parametrize(
    ("kind", "extra_params", "unit", "budgets"),
    [
        ("lora", {"dropout": 0.1, "warmup_ratio": 0.2, "weight_decay": 0.01}, "epochs", (1, 2)),
        ("adalora", {"dropout": 0.1}, "steps", (3, 9)),
        ("dynamic_rank", {"dropout": 0.1}, "steps", (3, 9)),
    ],
)
def test_a_promoted_trial_resumes_exactly(
    tmp_path: Path, make_config: Callable[..., Any], data_files: list[str], kind: str,
    extra_params: dict[str, Any], unit: str, budgets: tuple[int, int],
) -> None:
    """0 -> 3 -> 9 equals 0 -> 9: weights, optimizer moments, LR position and RNG all come back."""
    rung, top = budgets
    small = tmp_path / "small.jsonl"  # a short epoch keeps the epochs case fast: ~6 steps each
    small.write_text("".join(Path(data_files[0]).read_text().splitlines(keepends=True)[:20]))
    config = make_config(adapter=kind, budget_unit=unit, max_budget=top, report_every=2, batch_size=4,
                         grad_accum_steps=2, data_files=[str(small)])
    params = {**KIND_PARAMS[kind], **extra_params}
    whole, whole_rec, whole_out = run_slice(tmp_path, config, params, 0, top)
    first, first_rec, first_out = run_slice(tmp_path, config, params, 0, rung)
    second, second_rec, second_out = run_slice(tmp_path, config, params, rung, top, first_out)
    assert first.budget_done == rung and second.budget_done == top == whole.budget_done
    _assert_same_run(whole_rec, first_rec, second_rec)
    assert {k: second.metrics[k] for k in DETERMINISTIC} == {k: whole.metrics[k] for k in DETERMINISTIC}
    _same_tensors(whole_out, second_out, ADAPTER_FILE)
    _same_tensors(whole_out, second_out, OPTIMIZER_FILE)


def test_stop_checkpoints_where_it_stopped_and_resumes_from_there(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    config = make_config(max_budget=8, report_every=2)
    params = KIND_PARAMS["lora"]
    stopped, stopped_rec, stopped_out = run_slice(tmp_path, config, params, 0, 8, recorder=Recorder(stop_at=4))
    assert stopped.budget_done == 4 and [s for s, _ in stopped_rec.reports] == [2.0, 4.0]
    rest, rest_rec, rest_out = run_slice(tmp_path, config, params, 4, 8, stopped_out)
    whole, whole_rec, whole_out = run_slice(tmp_path, config, params, 0, 8)
    _assert_same_run(whole_rec, stopped_rec, rest_rec)
    _same_tensors(whole_out, rest_out, ADAPTER_FILE)


def test_resume_refuses_missing_corrupt_or_foreign_checkpoints(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    config = make_config(max_budget=8, report_every=4)
    params = KIND_PARAMS["lora"]
    with pytest.raises(CheckpointError, match="needs a checkpoint"):
        run_slice(tmp_path, config, params, 4, 8)
    _, _, out = run_slice(tmp_path, config, params, 0, 4)
    with pytest.raises(CheckpointError, match="other params"):
        run_slice(tmp_path, config, {**params, "learning_rate": 2e-2}, 4, 8, out)
    with pytest.raises(CheckpointError, match="other params"):
        run_slice(tmp_path, config, params, 4, 8, out, seed=8)
    with pytest.raises(CheckpointError, match="at step 4"):
        run_slice(tmp_path, config, params, 6, 8, out)
    (out / ADAPTER_FILE).write_bytes((out / ADAPTER_FILE).read_bytes()[:-8] + b"garbage!")
    with pytest.raises(CheckpointError, match="checksum"):
        run_slice(tmp_path, config, params, 4, 8, out)


@pytest.mark.parametrize(
    ("overrides", "params", "budgets", "message"),
    [
        ({}, {"learning_rate": 1e-2, "rnak": 4}, (0, 4), "rnak"),
        ({}, {"rank": 4}, (0, 4), "learning_rate"),
        ({}, {"learning_rate": 1e-2, "adapter": "ia3"}, (0, 4), "ia3"),
        ({}, {"learning_rate": 1e-2}, (0, 16), "exceeds max_budget"),
        ({"budget_unit": "epochs", "max_budget": 2}, {"learning_rate": 1e-2}, (0, 0.01), "shorter than one"),
        ({"model": "/nonexistent/model"}, {"learning_rate": 1e-2}, (0, 4), "nonexistent"),
        ({"seq_len": 4096}, {"learning_rate": 1e-2}, (0, 4), "seq_len"),
    ],
)
def test_configurations_that_cannot_train_raise_trainer_error(
    tmp_path: Path, make_config: Callable[..., Any], overrides: dict[str, Any], params: dict[str, Any],
    budgets: tuple[float, float], message: str,
) -> None:
    with pytest.raises(TrainerError, match=message):
        run_slice(tmp_path, make_config(**overrides), params, *budgets)


def test_a_worker_passing_max_budget_gets_it_cross_checked(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    with pytest.raises(TrainerError, match="differs from the study"):
        run_slice(tmp_path, make_config(max_budget=12), KIND_PARAMS["lora"], 0, 4, extra={"max_budget": 81})


def test_a_diverged_run_reports_and_writes_no_checkpoint(
    tmp_path: Path, make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainers.adapter_lm.training as training

    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: float("nan"))
    result, recorder, out = run_slice(tmp_path, make_config(max_budget=8, report_every=2), KIND_PARAMS["lora"], 0, 8)
    assert not result.wrote_checkpoint and not (out / STATE_FILE).exists()
    assert [step for step, _ in recorder.reports] == [2.0] and result.budget_done == 2.0
