"""The mup_gpt trainer plugin: exact resume, width from params, reports, schedule and errors."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file

from hpo_service.workers.registry import load_trainer
from hpo_service.workers.trainer import CheckpointError, TrainerError, TrainRequest, TrainResult
from tests.unit.mup_gpt.conftest import FakeReporter
from trainers.mup_gpt import TRAINER, MupGptConfig, TrialParams
from trainers.mup_gpt import checkpoint as ckpt
from trainers.mup_gpt.config import report_positions
from trainers.mup_gpt.model import GPT, Architecture, count_parameters
from trainers.mup_gpt.training import TrainingRun, lr_multiplier

PARAMS: dict[str, Any] = {"learning_rate": 0.01, "warmup_fraction": 0.25, "weight_decay": 1e-4}
EXACT = ("train_loss", "eval_loss", "params_count")  # tokens_per_s is a timing


def train(
    tmp_path: Path, config: BaseModel, budget_from: float, budget_to: float, checkpoint_in: Path | None = None, *,
    params: dict[str, Any] | None = None, seed: int = 7, reporter: FakeReporter | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[TrainResult, FakeReporter, Path]:
    out = tmp_path / f"ckpt-{budget_from:g}-{budget_to:g}-{seed}-{len(list(tmp_path.iterdir()))}"
    out.mkdir(parents=True)
    reporter = reporter or FakeReporter()
    request = TrainRequest(trial_id=1, params=PARAMS if params is None else params, config=config,
                           budget_from=budget_from, budget_to=budget_to, checkpoint_in=checkpoint_in,
                           checkpoint_out=out, seed=seed, extra=extra or {})
    return TRAINER.train(request, reporter), reporter, out


def exact(reports: list[tuple[float, dict[str, float]]]) -> list[tuple[float, dict[str, float]]]:
    return [(step, {key: metrics[key] for key in EXACT}) for step, metrics in reports]


def test_registered_with_what_the_mup_transfer_scheduler_reads() -> None:
    assert load_trainer("mup_gpt") is TRAINER
    assert TRAINER.supports_mup is True
    assert TRAINER.width_param == "width"
    assert TRAINER.transfer_axes == ("width",)
    assert TRAINER.metrics == ("train_loss", "eval_loss", "tokens_per_s", "params_count")
    assert TRAINER.config_model is MupGptConfig


def test_the_plugin_module_stays_light() -> None:
    """The API server imports the trainer to validate specs: that must not import torch."""
    code = "import sys, trainers.mup_gpt; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_resume_0_2_4_equals_0_4_bit_for_bit(
    tmp_path: Path, make_config: Callable[..., Any], parametrization: str
) -> None:
    config = make_config(parametrization=parametrization)
    whole, whole_reports, whole_dir = train(tmp_path, config, 0, 4)
    first, first_reports, first_dir = train(tmp_path, config, 0, 2)
    second, second_reports, second_dir = train(tmp_path, config, 2, 4, first_dir)

    assert exact(first_reports.reports + second_reports.reports) == exact(whole_reports.reports)
    assert [step for step, _ in whole_reports.reports] == [1, 2, 3, 4]
    assert {key: second.metrics[key] for key in EXACT} == {key: whole.metrics[key] for key in EXACT}
    assert (first.budget_done, second.budget_done, whole.budget_done) == (2, 4, 4)
    for name in (ckpt.MODEL_FILE, ckpt.OPTIMIZER_FILE, ckpt.EXTRA_FILE):
        resumed, uninterrupted = load_file(str(second_dir / name)), load_file(str(whole_dir / name))
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.equal(resumed[key], uninterrupted[key]) for key in resumed), name


def test_resume_at_an_off_grid_budget_is_exact(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config(steps_per_unit=4)
    whole, whole_reports, _ = train(tmp_path, config, 0, 3)
    _, first_reports, first_dir = train(tmp_path, config, 0, 1.5)
    second, second_reports, _ = train(tmp_path, config, 1.5, 3, first_dir)
    assert [step for step, _ in first_reports.reports] == [1, 1.5]
    # train_loss at 2 averages steps 5..8 in both runs: the running sum travels in the checkpoint.
    assert exact(second_reports.reports) == exact(whole_reports.reports[1:])
    assert second.metrics["eval_loss"] == whole.metrics["eval_loss"]


def test_width_param_wins_over_the_config(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config(width=32)
    result, _, _ = train(tmp_path, config, 0, 1, params={**PARAMS, "width": 64})
    arch = Architecture(width=64, depth=2, heads=4, mlp_ratio=4, seq_len=32, base_width=32, base_head_dim=16)
    assert result.metrics["params_count"] == count_parameters(GPT(arch, "mup", 1.0))
    narrow, _, _ = train(tmp_path, config, 0, 1)
    assert narrow.metrics["params_count"] < result.metrics["params_count"]


def test_a_checkpoint_never_crosses_widths(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config()
    _, _, narrow_dir = train(tmp_path, config, 0, 1, params={**PARAMS, "width": 32})
    with pytest.raises(CheckpointError, match="another run"):
        train(tmp_path, config, 1, 2, narrow_dir, params={**PARAMS, "width": 64})


def test_metrics_and_learning(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    result, reporter, _ = train(tmp_path, make_config(), 0, 4)
    first, last = reporter.reports[0][1], result.metrics
    assert set(last) == set(TRAINER.metrics)
    assert last["tokens_per_s"] > 0
    assert last["eval_loss"] < first["eval_loss"] < math.log(256)  # 12 steps already beat a uniform guess
    assert any("tok/s" in line for line in reporter.logs)


def test_early_stop_writes_a_resumable_checkpoint(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config()
    stopped, reporter, out = train(tmp_path, config, 0, 4, reporter=FakeReporter(stop_at=2))
    assert [step for step, _ in reporter.reports] == [1, 2]
    assert stopped.budget_done == 2 and stopped.wrote_checkpoint
    resumed, _, _ = train(tmp_path, config, 2, 4, out)
    whole, _, _ = train(tmp_path, config, 0, 4)
    assert resumed.metrics["eval_loss"] == whole.metrics["eval_loss"]


def test_a_non_finite_loss_ends_the_slice_without_a_checkpoint(
    tmp_path: Path, make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TrainingRun, "evaluate", lambda self: math.nan)
    result, reporter, out = train(tmp_path, make_config(), 0, 4)
    assert result.budget_done == 1 and not result.wrote_checkpoint
    assert math.isnan(result.metrics["eval_loss"]) and len(reporter.reports) == 1
    assert not (out / ckpt.STATE_FILE).exists()


def test_the_config_seed_overrides_the_trial_seed(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    shared = make_config(seed=5)
    one, _, _ = train(tmp_path, shared, 0, 1, seed=1)
    two, _, _ = train(tmp_path, shared, 0, 1, seed=2)
    three, _, _ = train(tmp_path, make_config(), 0, 1, seed=1)
    assert one.metrics["eval_loss"] == two.metrics["eval_loss"] != three.metrics["eval_loss"]


def _corrupt(folder: Path) -> None:
    data = bytearray((folder / ckpt.MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / ckpt.MODEL_FILE).write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "resume_kwargs", "match"),
    [
        ("none", {"params": {**PARAMS, "learning_rate": 0.02}}, "another run"),
        ("none", {"seed": 8}, "another run"),
        ("none", {"budget_from": 1}, "at step 6"),
        ("delete_state", {}, "missing"),
        ("corrupt_model", {}, "checksum"),
        ("no_checkpoint", {}, "needs a checkpoint"),
    ],
)
def test_unusable_checkpoints_raise_checkpoint_error(
    tmp_path: Path, make_config: Callable[..., Any], damage: str, resume_kwargs: dict[str, Any], match: str
) -> None:
    config = make_config()
    _, _, out = train(tmp_path, config, 0, 2)
    if damage == "delete_state":
        (out / ckpt.STATE_FILE).unlink()
    elif damage == "corrupt_model":
        _corrupt(out)
    budget_from = resume_kwargs.pop("budget_from", 2)
    checkpoint_in = None if damage == "no_checkpoint" else out
    with pytest.raises(CheckpointError, match=match):
        train(tmp_path, config, budget_from, 4, checkpoint_in, **resume_kwargs)


@pytest.mark.parametrize(
    ("params", "budget", "extra", "match"),
    [
        ({**PARAMS, "lr": 0.01}, 1, {}, "invalid mup_gpt trial params"),
        ({"learning_rate": -1.0}, 1, {}, "invalid mup_gpt trial params"),
        ({**PARAMS, "width": 40}, 1, {}, "not divisible by head_dim"),
        (PARAMS, 5, {}, "past max_budget"),
        (PARAMS, 1, {"max_budget": 9}, "differs from the study"),
    ],
)
def test_untrainable_requests_raise_trainer_error(
    tmp_path: Path, make_config: Callable[..., Any], params: dict[str, Any], budget: float,
    extra: dict[str, Any], match: str,
) -> None:
    with pytest.raises(TrainerError, match=match):
        train(tmp_path, make_config(), 0, budget, params=params, extra=extra)


def test_a_missing_corpus_file_is_a_trainer_error(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    config = make_config(corpus="file", corpus_path=str(tmp_path / "missing.txt"))
    with pytest.raises(TrainerError, match="cannot be read"):
        train(tmp_path, config, 0, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_cuda_without_a_device_is_a_trainer_error(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    with pytest.raises(TrainerError, match="no CUDA device"):
        train(tmp_path, make_config(device="cuda"), 0, 1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"heads": 2, "head_dim": 16}, "heads or head_dim"),
        ({"width": 40}, "not divisible"),
        ({"corpus": "file"}, "corpus_path"),
        ({"corpus_path": "/tmp/x.txt"}, "corpus_path"),
        ({"steps_per_unit": 1, "report_every": 0.5}, "at least one optimizer step"),
        ({"base_widht": 64}, "Extra inputs"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
    ],
)
def test_config_validation(make_config: Callable[..., Any], overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        make_config(**overrides)


def test_trial_params_defaults() -> None:
    params = TrialParams(learning_rate=0.01)
    assert (params.init_std, params.output_multiplier, params.warmup_fraction, params.weight_decay,
            params.width) == (0.02, 1.0, 0.0, 0.0, None)


@pytest.mark.parametrize(
    ("budget_from", "budget_to", "every", "expected"),
    [(0, 4, 1, [(1, True), (2, True), (3, True), (4, True)]), (0, 2.5, 1, [(1, True), (2, True), (2.5, False)]),
     (2.5, 4, 1, [(3, True), (4, True)]), (0, 0.3, 0.1, [(0.1, True), (0.2, True), (0.3, True)]),
     (1, 9, 3, [(3, True), (6, True), (9, True)]), (0, 0.5, 1, [(0.5, False)])],
)
def test_report_positions(
    budget_from: float, budget_to: float, every: float, expected: list[tuple[float, bool]]
) -> None:
    assert report_positions(budget_from, budget_to, every) == expected


@pytest.mark.parametrize(
    ("step", "kind", "expected"),
    [
        (0, "cosine", 0.25),  # warmup of 4 steps: (step + 1) / 4
        (3, "cosine", 1.0),
        (4, "cosine", 1.0),  # decay starts after warmup
        (8, "cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 12))),
        (16, "cosine", 0.1),  # the end of max_budget
        (40, "cosine", 0.1),  # past it, the schedule stays at its end
        (10, "linear", 1.0 - 0.9 * 0.5),
        (16, "linear", 0.1),
        (10, "constant", 1.0),
        (1, "constant", 0.5),
    ],
)
def test_lr_multiplier(step: int, kind: str, expected: float) -> None:
    assert lr_multiplier(step, total_steps=16, warmup_steps=4, kind=kind, min_ratio=0.1) == pytest.approx(expected)
