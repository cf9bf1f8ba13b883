"""One budget slice of the ``mup_gpt`` trainer: a ``TrainingRun`` driven to ``budget_to``, reports, checkpoint.

Imported by ``MupGptTrainer.train`` in the worker only (torch is heavy; the API server never
imports this). Reports sit on the absolute grid ``k * report_every`` (plus the slice end), so a
run split anywhere reports at the positions of an uninterrupted one; training 0->2 then 2->4
reports and ends with exactly what 0->4 does (tests/unit/mup_gpt/test_trainer.py checks it bit
for bit on the CPU). A non-finite loss ends the slice at that report without a checkpoint: the
service fails a trial whose objective is not finite, and a diverged run is not worth resuming.

The width is part of the checkpoint's identity, so a checkpoint never crosses widths.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import ValidationError

from hpo_service.workers.trainer import (
    CheckpointError,
    Reporter,
    TrainerError,
    TrainRequest,
    TrainResult,
)
from trainers.mup_gpt import checkpoint
from trainers.mup_gpt.config import BUDGET_TOLERANCE, MupGptConfig, TrialParams, report_positions, steps_at
from trainers.mup_gpt.training import TrainingRun

# Settings that do not change the trajectory: a resume may differ in them.
_NON_TRAJECTORY_FIELDS = frozenset({"width", "report_every", "eval_batches", "cache_dir", "device"})
MAX_REPORTS_PER_SLICE = 100_000


def train_slice(request: TrainRequest, reporter: Reporter) -> TrainResult:
    """Train ``request.budget_from -> budget_to``; TrainerError / CheckpointError as in workers/trainer.py."""
    config, params = _config_of(request), _params_of(request)
    positions = _positions_of(request, config)
    try:
        run = TrainingRun(config, params, config.seed if config.seed is not None else request.seed)
    except ValueError as exc:
        raise TrainerError(str(exc)) from exc
    if request.budget_from > 0:
        _resume(run, request)
    metrics: dict[str, float] = {}
    budget_done = request.budget_from
    for position, on_grid in positions:
        metrics = _train_until(run, steps_at(position, config.steps_per_unit), reset=on_grid)
        reporter.log(f"step {run.step}/{run.total_steps} (budget {position:g}) width {run.width} "
                     f"train {metrics['train_loss']:.4f} eval {metrics['eval_loss']:.4f} "
                     f"{metrics['tokens_per_s']:.0f} tok/s")
        directive = reporter.report(position, dict(metrics))
        budget_done = position
        if not all(math.isfinite(metrics[key]) for key in ("train_loss", "eval_loss")):
            reporter.log(f"loss is not finite at budget {position:g}: stopping without a checkpoint")
            return TrainResult(metrics=metrics, budget_done=budget_done, wrote_checkpoint=False)
        if directive == "stop":
            break
    _write_checkpoint(run, request)
    return TrainResult(metrics=metrics, budget_done=budget_done)


def _train_until(run: TrainingRun, target_step: int, *, reset: bool) -> dict[str, float]:
    started, first_step = run.synchronize(), run.step
    while run.step < target_step:
        run.train_step()
    train_loss = run.train_loss(reset=reset)  # synchronises
    elapsed = run.synchronize() - started
    tokens = (run.step - first_step) * run.tokens_per_step
    return {
        "train_loss": train_loss,
        "eval_loss": run.evaluate(),
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "params_count": float(run.params_count),
    }


def _config_of(request: TrainRequest) -> MupGptConfig:
    if isinstance(request.config, MupGptConfig):
        config = request.config
    else:
        try:
            config = MupGptConfig.model_validate(request.config.model_dump())
        except ValidationError as exc:
            raise TrainerError(f"invalid mup_gpt trainer config: {exc}") from exc
    given = request.extra.get("max_budget")
    if given is not None and abs(float(given) - config.max_budget) > BUDGET_TOLERANCE * max(1.0, config.max_budget):
        raise TrainerError(f"config max_budget={config.max_budget:g} differs from the study's {given:g}")
    return config


def _params_of(request: TrainRequest) -> TrialParams:
    try:
        return TrialParams.model_validate(request.params)
    except ValidationError as exc:
        raise TrainerError(f"invalid mup_gpt trial params: {exc}") from exc


def _positions_of(request: TrainRequest, config: MupGptConfig) -> list[tuple[float, bool]]:
    start, end = request.budget_from, request.budget_to
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise TrainerError(f"budget slice {start}->{end} must be finite and start at 0 or later")
    if end <= start:
        raise TrainerError(f"budget_to ({end}) must be greater than budget_from ({start})")
    if end > config.max_budget * (1 + BUDGET_TOLERANCE):
        raise TrainerError(f"budget_to ({end:g}) is past max_budget ({config.max_budget:g}), "
                           "where the learning-rate schedule ends")
    if (end - start) / config.report_every > MAX_REPORTS_PER_SLICE:
        raise TrainerError(f"report_every={config.report_every} gives more than {MAX_REPORTS_PER_SLICE} reports")
    return report_positions(start, end, config.report_every)


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _identity(run: TrainingRun, request: TrainRequest) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run rather than another one."""
    trajectory = {key: value for key, value in run.config.model_dump(mode="json").items()
                  if key not in _NON_TRAJECTORY_FIELDS}
    return {"seed": request.seed, "params_sha256": _digest(request.params), "config_sha256": _digest(trajectory),
            "width": run.width, "corpus_sha256": run.corpus_digest}


def _write_checkpoint(run: TrainingRun, request: TrainRequest) -> None:
    scalars, extra = run.state()
    payload = {**_identity(run, request), **scalars}
    checkpoint.write(request.checkpoint_out, payload, run.model.state_dict(),
                     checkpoint.optimizer_tensors(run.optimizer), extra)


def _resume(run: TrainingRun, request: TrainRequest) -> None:
    where = request.checkpoint_in
    if where is None:
        raise CheckpointError(f"trial {request.trial_id}: resuming at budget {request.budget_from:g} "
                              "needs a checkpoint, and none was given")
    loaded = checkpoint.read(where)
    expected = _identity(run, request)
    mismatched = [key for key, value in expected.items() if loaded.payload.get(key) != value]
    if mismatched:
        raise CheckpointError(f"{where}: checkpoint belongs to another run (differs in {', '.join(mismatched)})")
    step = steps_at(request.budget_from, run.config.steps_per_unit)
    if loaded.payload.get("step") != step:
        raise CheckpointError(f"{where}: checkpoint is at step {loaded.payload.get('step')}, "
                              f"the slice starts at step {step}")
    try:
        run.model.load_state_dict(loaded.model)
        checkpoint.load_optimizer_tensors(run.optimizer, loaded.optimizer)
        run.restore(loaded.payload, loaded.extra)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: checkpoint does not fit the model ({exc})") from exc
