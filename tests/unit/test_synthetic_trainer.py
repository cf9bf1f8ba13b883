"""The synthetic trainer: resume equality, early stop, checkpoint errors and curve shape."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hpo_service.workers.checkpoints import FileCheckpointStore
from hpo_service.workers.registry import load_trainer
from hpo_service.workers.trainer import (
    CheckpointError,
    Directive,
    Trainer,
    TrainerError,
    TrainRequest,
    TrainResult,
)
from trainers.synthetic import TRAINER, SyntheticConfig, SyntheticTrainer
from trainers.synthetic.curves import (
    FLOOR_LOSS,
    accuracy_from_loss,
    curve_for,
    is_log_scale,
    report_positions,
)
from trainers.synthetic.trainer import STATE_FILE

PARAMS: dict[str, Any] = {"lr": 3e-3, "dropout": 0.1, "rank": 8, "optimizer": "adamw"}


@dataclass
class FakeReporter:
    """Records every call; answers "stop" once a report reaches ``stop_at``."""

    stop_at: float | None = None
    reports: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def report(self, step: float, metrics: dict[str, float]) -> Directive:
        self.reports.append((step, metrics))
        return "stop" if self.stop_at is not None and step >= self.stop_at else "continue"

    def log(self, message: str) -> None:
        self.logs.append(message)


def _train(
    tmp_path: Path,
    budget_from: float,
    budget_to: float,
    checkpoint_in: Path | None = None,
    *,
    params: dict[str, Any] | None = None,
    config: BaseModel | None = None,
    seed: int = 42,
    reporter: FakeReporter | None = None,
    extra: dict[str, Any] | None = None,
    trainer: SyntheticTrainer = TRAINER,
) -> tuple[TrainResult, FakeReporter, Path]:
    out = tmp_path / f"ckpt-{budget_from:g}-{budget_to:g}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or FakeReporter()
    request = TrainRequest(
        trial_id=1,
        params=PARAMS if params is None else params,
        config=config or SyntheticConfig(noise=0.05),
        budget_from=budget_from,
        budget_to=budget_to,
        checkpoint_in=checkpoint_in,
        checkpoint_out=out,
        seed=seed,
        extra=extra or {},
    )
    return trainer.train(request, reporter), reporter, out


def _train_in_slices(tmp_path: Path, cuts: list[float], config: SyntheticConfig) -> tuple[
    TrainResult, list[tuple[float, dict[str, float]]]
]:
    reports: list[tuple[float, dict[str, float]]] = []
    checkpoint: Path | None = None
    result = None
    for start, end in zip(cuts, cuts[1:]):
        result, reporter, checkpoint = _train(tmp_path, start, end, checkpoint, config=config)
        assert result.budget_done == end
        reports += reporter.reports
    assert result is not None
    return result, reports


# --- the protocol ------------------------------------------------------------------------


def test_trainer_satisfies_the_protocol_and_is_registered() -> None:
    trainer: Trainer = TRAINER  # checked by mypy; the asserts check the values
    assert (trainer.name, trainer.metrics, trainer.supports_mup) == (
        "synthetic",
        ("loss", "accuracy"),
        False,
    )
    assert trainer.config_model is SyntheticConfig
    assert load_trainer("synthetic") is TRAINER


@pytest.mark.parametrize(
    "fields",
    [{"unknown": 1}, {"noise": -0.1}, {"report_every": 0}, {"fail_probability": 1.5},
     {"sleep_per_unit": float("inf")}, {"optimum": {"lr": "high"}}],
)
def test_config_rejects_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SyntheticConfig.model_validate(fields)


# --- resume equality -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuts", "report_every"),
    [
        ([0, 9], 1.0),
        ([0, 3, 9], 1.0),
        ([0, 1, 3, 9], 1.0),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 1.0),
        ([0, 2.5, 9], 0.5),
        ([0, 0.5, 7.5, 9], 0.5),
        ([0, 0.3, 0.9], 0.1),
    ],
)
def test_resumed_run_reports_exactly_what_one_run_reports(
    tmp_path: Path, cuts: list[float], report_every: float
) -> None:
    config = SyntheticConfig(noise=0.05, report_every=report_every)
    whole, whole_reports = _train_in_slices(tmp_path / "whole", [cuts[0], cuts[-1]], config)
    split, split_reports = _train_in_slices(tmp_path / "split", cuts, config)
    assert split_reports == whole_reports
    assert split.metrics == whole.metrics
    assert len(whole_reports) == round((cuts[-1] - cuts[0]) / report_every)


def test_off_grid_split_adds_one_report_and_shifts_no_noise(tmp_path: Path) -> None:
    config = SyntheticConfig(noise=0.05, report_every=1.0)
    whole, whole_reports = _train_in_slices(tmp_path / "whole", [0, 9], config)
    split, split_reports = _train_in_slices(tmp_path / "split", [0, 2.5, 9], config)
    assert [step for step, _ in split_reports] == [1, 2, 2.5, 3, 4, 5, 6, 7, 8, 9]
    assert [r for r in split_reports if r[0] != 2.5] == whole_reports
    assert split.metrics == whole.metrics


def test_resume_through_the_file_store(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "store")
    config = SyntheticConfig(noise=0.05)
    first_out = store.open_for_write(1, 1, 3)
    request = TrainRequest(1, PARAMS, config, 0, 3, None, first_out, seed=5)
    TRAINER.train(request, FakeReporter())
    uri = store.commit(first_out, 1, 1, 3)
    second = FakeReporter()
    resumed = TrainRequest(1, PARAMS, config, 3, 9, store.fetch(uri), store.open_for_write(1, 1, 9), seed=5)
    result = TRAINER.train(resumed, second)
    whole = FakeReporter()
    TRAINER.train(TrainRequest(1, PARAMS, config, 0, 9, None, tmp_path / "whole", seed=5), whole)
    assert second.reports == whole.reports[3:]
    assert result.metrics == whole.reports[-1][1]


# --- early stop -------------------------------------------------------------------------------


@pytest.mark.parametrize(("stop_at", "budget_to"), [(1, 9), (4, 9), (9, 9), (2.5, 2.5)])
def test_stop_directive_ends_the_slice_with_a_checkpoint(
    tmp_path: Path, stop_at: float, budget_to: float
) -> None:
    result, reporter, out = _train(tmp_path, 0, budget_to, reporter=FakeReporter(stop_at=stop_at))
    assert reporter.reports[-1][0] == stop_at == result.budget_done
    assert result.metrics == reporter.reports[-1][1]
    assert result.wrote_checkpoint
    state = json.loads((out / STATE_FILE).read_text())
    assert state["payload"]["budget_done"] == stop_at


def test_a_stopped_trial_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    _, _, checkpoint = _train(tmp_path, 0, 9, reporter=FakeReporter(stop_at=4))
    _, resumed, _ = _train(tmp_path / "resumed", 4, 9, checkpoint)
    _, whole, _ = _train(tmp_path / "whole", 0, 9)
    assert resumed.reports == whole.reports[4:]


# --- checkpoint errors --------------------------------------------------------------------------


def _corrupt_checksum(folder: Path) -> None:
    state = json.loads((folder / STATE_FILE).read_text())
    state["payload"]["budget_done"] = 2.0
    (folder / STATE_FILE).write_text(json.dumps(state))


def _rewrite_field(name: str, value: Any) -> Any:
    def rewrite(folder: Path) -> None:
        state = json.loads((folder / STATE_FILE).read_text())
        state[name] = value
        (folder / STATE_FILE).write_text(json.dumps(state))

    return rewrite


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / STATE_FILE).unlink(), "missing"),
        (lambda folder: (folder / STATE_FILE).write_text("{not json"), "unreadable"),
        (lambda folder: (folder / STATE_FILE).write_bytes(b"\xff\xfe"), "unreadable"),
        (lambda folder: (folder / STATE_FILE).write_text("[]"), "not a synthetic"),
        (_corrupt_checksum, "checksum"),
        (_rewrite_field("sha256", "0" * 64), "checksum"),
        (_rewrite_field("format", 99), "format"),
    ],
)
def test_damaged_checkpoint_raises_checkpoint_error(
    tmp_path: Path, damage: Any, message: str
) -> None:
    _, _, checkpoint = _train(tmp_path, 0, 3)
    damage(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        _train(tmp_path / "resume", 3, 9, checkpoint)


@pytest.mark.parametrize(
    ("checkpoint_in", "changes", "message"),
    [
        (None, {}, "none was given"),
        ("missing-folder", {}, "missing"),
        ("ok", {"budget_from": 2}, "at budget 3, but the slice starts at 2"),
        ("ok", {"seed": 7}, "other params or another seed"),
        ("ok", {"params": {**PARAMS, "lr": 1e-2}}, "other params or another seed"),
    ],
)
def test_unusable_checkpoint_raises_checkpoint_error(
    tmp_path: Path, checkpoint_in: str | None, changes: dict[str, Any], message: str
) -> None:
    _, _, checkpoint = _train(tmp_path, 0, 3)
    folder = {None: None, "missing-folder": tmp_path / "gone", "ok": checkpoint}[checkpoint_in]
    with pytest.raises(CheckpointError, match=message):
        _train(tmp_path / "resume", changes.pop("budget_from", 3), 9, folder, **changes)


def test_fresh_start_ignores_a_given_checkpoint(tmp_path: Path) -> None:
    _, _, checkpoint = _train(tmp_path, 0, 3, seed=1)
    _, with_checkpoint, _ = _train(tmp_path / "a", 0, 3, checkpoint, seed=2)
    _, without, _ = _train(tmp_path / "b", 0, 3, None, seed=2)
    assert with_checkpoint.reports == without.reports


# --- bad requests ---------------------------------------------------------------------------


class _NegativeNoise(BaseModel):
    noise: float = -1.0


@pytest.mark.parametrize(
    ("budget_from", "budget_to", "params", "config", "message"),
    [
        (3, 3, PARAMS, SyntheticConfig(), "must be greater"),
        (5, 3, PARAMS, SyntheticConfig(), "must be greater"),
        (-1, 3, PARAMS, SyntheticConfig(), "finite"),
        (0, math.inf, PARAMS, SyntheticConfig(), "finite"),
        (0, 1e9, PARAMS, SyntheticConfig(report_every=1), "raise report_every"),
        (0, 3, {"lr": math.nan}, SyntheticConfig(), "finite numbers"),
        (0, 3, PARAMS, _NegativeNoise(), "invalid synthetic"),
    ],
)
def test_untrainable_request_raises_trainer_error(
    tmp_path: Path, budget_from: float, budget_to: float, params: dict[str, Any],
    config: BaseModel, message: str,
) -> None:
    with pytest.raises(TrainerError, match=message):
        _train(tmp_path, budget_from, budget_to, params=params, config=config)


def test_config_of_another_model_type_is_validated(tmp_path: Path) -> None:
    class Lookalike(BaseModel):
        noise: float = 0.0

    result, _, _ = _train(tmp_path, 0, 2, config=Lookalike())
    assert result.metrics["loss"] == pytest.approx(curve_for(PARAMS, {}).loss_at(2))


# --- report positions and log lines -----------------------------------------------------------


@pytest.mark.parametrize(
    ("budget_from", "budget_to", "every", "expected"),
    [
        (0, 3, 1, [1, 2, 3]),
        (0, 1, 0.25, [0.25, 0.5, 0.75, 1]),
        (0, 0.3, 0.1, [0.1, 0.2, 0.3]),
        (2.5, 5, 1, [3, 4, 5]),
        (0, 2.5, 1, [1, 2, 2.5]),
        (3, 3.5, 1, [3.5]),
        (0, 9, 3, [3, 6, 9]),
        (0, 1, 3, [1]),
    ],
)
def test_report_positions(
    budget_from: float, budget_to: float, every: float, expected: list[float]
) -> None:
    assert [p for p, _ in report_positions(budget_from, budget_to, every)] == expected


def test_reports_and_logs_at_each_position(tmp_path: Path) -> None:
    config = SyntheticConfig(noise=0.0, report_every=1)
    result, reporter, _ = _train(tmp_path, 0, 9, config=config)
    assert [step for step, _ in reporter.reports] == list(range(1, 10))
    loss_at_3 = reporter.reports[2][1]["loss"]
    assert reporter.logs[2] == f"step 3/9 loss {loss_at_3:.4f}"
    assert len(reporter.logs) == 9
    assert result.budget_done == 9 and result.metrics == reporter.reports[-1][1]


def test_checkpoint_is_plain_json(tmp_path: Path) -> None:
    _, _, out = _train(tmp_path, 0, 3)
    state = json.loads((out / STATE_FILE).read_text())
    assert set(state) == {"format", "payload", "sha256"}
    assert {"budget_done", "rng", "seed", "last_noise", "metrics"} <= set(state["payload"])


# --- determinism and noise ----------------------------------------------------------------------


def test_same_seed_same_reports_other_seed_other_noise(tmp_path: Path) -> None:
    runs = {seed: _train(tmp_path / f"run{i}", 0, 5, seed=seed)[1].reports for i, seed in
            enumerate([1, 1, 2])}
    again = _train(tmp_path / "again", 0, 5, seed=1)[1].reports
    assert again == runs[1]
    assert runs[1] != runs[2]


def test_without_noise_the_loss_is_the_curve(tmp_path: Path) -> None:
    _, reporter, _ = _train(tmp_path, 0, 5, config=SyntheticConfig(noise=0.0))
    curve = curve_for(PARAMS, {})
    for step, metrics in reporter.reports:
        assert metrics["loss"] == pytest.approx(curve.loss_at(step))
        assert metrics["accuracy"] == pytest.approx(accuracy_from_loss(metrics["loss"]))


def test_noise_has_the_configured_scale(tmp_path: Path) -> None:
    # 400 draws of N(0, 0.05): the sample sd lies in [0.04, 0.06] except with p < 1e-6. The
    # draws are seeded, so this cannot flake; the bound says how surprising a failure is.
    config = SyntheticConfig(noise=0.05, report_every=1)
    _, reporter, _ = _train(tmp_path, 0, 400, config=config)
    curve = curve_for(PARAMS, {})
    residuals = [m["loss"] - curve.loss_at(step) for step, m in reporter.reports]
    mean = sum(residuals) / len(residuals)
    sd = math.sqrt(sum((r - mean) ** 2 for r in residuals) / (len(residuals) - 1))
    assert 0.04 <= sd <= 0.06


@pytest.mark.parametrize("noise", [0.0, 0.05, 1.0])
def test_metrics_stay_in_range(tmp_path: Path, noise: float) -> None:
    _, reporter, _ = _train(tmp_path, 0, 30, config=SyntheticConfig(noise=noise))
    for _, metrics in reporter.reports:
        assert metrics["loss"] >= 0
        assert 0 < metrics["accuracy"] <= 1


# --- curve shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "log_scale"),
    [("lr", True), ("head_lr", True), ("lr-head", True), ("learning_rate", True),
     ("weight_decay", True), ("dropout", False), ("ctrl_dim", False), ("rank", False)],
)
def test_log_scale_names(name: str, log_scale: bool) -> None:
    assert is_log_scale(name) is log_scale


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"lr": 1e-3}, {"lr": 1e-2}),
        ({"dropout": 0.1}, {"dropout": 0.3}),
        ({"rank": 8}, {"rank": 16}),
        ({"optimizer": "adamw"}, {"optimizer": "sgd"}),
        ({"use_bias": True}, {"use_bias": False}),
        ({"lr": 1e-3}, {"lr": 1e-3, "optimizer": "adamw"}),
    ],
)
def test_curves_differ_per_params(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert curve_for(a, {}) != curve_for(b, {})


def test_categorical_offsets_are_stable() -> None:
    # crc32-based, so these values hold in every process; a change here breaks benchmarks.
    assert curve_for({"optimizer": "adamw"}, {}) == curve_for({"optimizer": "adamw"}, {})
    assert FLOOR_LOSS <= curve_for({"optimizer": "adamw"}, {}).final < FLOOR_LOSS + 0.05


def test_curves_cross() -> None:
    # A learning rate 10x above the optimum is ahead early and behind late.
    good, hasty = curve_for({"lr": 1e-3}, {}), curve_for({"lr": 1e-2}, {})
    assert hasty.loss_at(1) < good.loss_at(1)
    assert hasty.loss_at(3) < good.loss_at(3)
    assert good.loss_at(9) < hasty.loss_at(9)
    assert good.loss_at(81) < hasty.loss_at(81)


def test_some_pair_of_categorical_choices_cross() -> None:
    curves = [curve_for({"optimizer": name}, {}) for name in ("adamw", "sgd", "lion", "adafactor")]
    crossing = [
        (a, b) for a in curves for b in curves
        if a.loss_at(1) < b.loss_at(1) and a.loss_at(100) > b.loss_at(100)
    ]
    assert crossing


OPTIMUM = {"lr": 3e-4, "dropout": 0.2, "rank": 16}


@pytest.mark.parametrize(
    "moved",
    [{"lr": 1e-4}, {"lr": 1e-3}, {"lr": 3.1e-4}, {"dropout": 0.1}, {"dropout": 0.25},
     {"rank": 8}, {"rank": 17}],
)
def test_the_optimum_is_where_the_config_says(moved: dict[str, float]) -> None:
    at_optimum = curve_for({**OPTIMUM, "optimizer": "adamw"}, OPTIMUM)
    elsewhere = curve_for({**OPTIMUM, "optimizer": "adamw", **moved}, OPTIMUM)
    assert at_optimum.final < elsewhere.final


def test_at_the_optimum_only_categorical_offsets_remain() -> None:
    assert curve_for(OPTIMUM, OPTIMUM).final == pytest.approx(FLOOR_LOSS)


def test_optimum_reaches_the_trainer(tmp_path: Path) -> None:
    config = SyntheticConfig(noise=0.0, optimum=OPTIMUM)
    near, _, _ = _train(tmp_path / "near", 0, 50, params=OPTIMUM, config=config)
    far, _, _ = _train(tmp_path / "far", 0, 50, params={**OPTIMUM, "lr": 3e-2}, config=config)
    assert near.metrics["loss"] < far.metrics["loss"]
    assert near.metrics["accuracy"] > far.metrics["accuracy"]


# --- emulated time and injected failures -----------------------------------------------------------


def test_sleep_per_unit_emulates_training_time(tmp_path: Path) -> None:
    slept: list[float] = []
    trainer = SyntheticTrainer(sleep=slept.append)
    config = SyntheticConfig(sleep_per_unit=0.5, report_every=1)
    _, _, checkpoint = _train(tmp_path, 0, 2.5, config=config, trainer=trainer)
    assert slept == pytest.approx([0.5, 0.5, 0.25])
    slept.clear()
    _train(tmp_path, 2.5, 5, checkpoint, config=config, trainer=trainer)
    assert slept == pytest.approx([0.25, 0.5, 0.5])


def test_fail_probability_one_always_fails_retryably(tmp_path: Path) -> None:
    reporter = FakeReporter()
    with pytest.raises(RuntimeError, match="synthetic failure") as raised:
        _train(tmp_path, 0, 9, config=SyntheticConfig(fail_probability=1.0), reporter=reporter)
    assert not isinstance(raised.value, (TrainerError, CheckpointError))
    assert len(reporter.reports) < 9
    assert not (tmp_path / "ckpt-0-9-42" / STATE_FILE).exists()


def test_injected_failures_are_deterministic_and_vary_with_attempt(tmp_path: Path) -> None:
    config = SyntheticConfig(fail_probability=0.5, noise=0.0)

    def fails(attempt: int, seed: int = 3) -> bool:
        try:
            _train(tmp_path / f"a{attempt}-{seed}", 0, 3, config=config, seed=seed,
                   extra={"attempt": attempt})
        except RuntimeError:
            return True
        return False

    outcomes = [fails(attempt) for attempt in range(40)]
    assert outcomes == [fails(attempt) for attempt in range(40)]
    # Both outcomes among 40 fair draws; a fixed seed makes this exact, not a 2**-39 gamble.
    assert any(outcomes) and not all(outcomes)


def test_injected_failure_does_not_change_the_noise(tmp_path: Path) -> None:
    never = SyntheticConfig(noise=0.05, fail_probability=0.0)
    sometimes = SyntheticConfig(noise=0.05, fail_probability=0.3)
    for attempt in range(10):
        try:
            _, with_faults, _ = _train(tmp_path / f"f{attempt}", 0, 5, config=sometimes,
                                       extra={"attempt": attempt})
        except RuntimeError:
            continue
        _, without, _ = _train(tmp_path / f"n{attempt}", 0, 5, config=never)
        assert with_faults.reports == without.reports
        return
    pytest.fail("no attempt succeeded at fail_probability=0.3")
