"""The synthetic trainer: a cheap stand-in for real training, for tests, the demo and benchmarks.

It follows the learning curves of ``curves.py`` plus Gaussian noise, reports ``loss`` and
``accuracy`` on the grid ``k * report_every``, and checkpoints to ``state.json``. The noise
generator's state travels in the checkpoint, so training 0->3 and resuming 3->9 reports
exactly what one 0->9 run reports. That is the property the service's resume path relies
on, and the reason this trainer exists: a real trainer's resume bugs look like noise.

Noise is drawn once per grid position, never for an off-grid slice end (which reuses the
last draw), so where a run is split does not shift the noise of later reports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hpo_service.workers.trainer import (
    CheckpointError,
    Reporter,
    TrainerError,
    TrainRequest,
    TrainResult,
)
from trainers.synthetic.config import SyntheticConfig
from trainers.synthetic.curves import accuracy_from_loss, curve_for, report_positions

STATE_FILE = "state.json"
STATE_FORMAT = 1
# A report_every far below the slice length would mean millions of HTTP reports; refuse it.
MAX_REPORTS_PER_SLICE = 100_000
_BUDGET_TOLERANCE = 1e-9


@dataclass
class Progress:
    """What a checkpoint carries from one slice to the next."""

    budget_done: float
    rng: random.Random
    last_noise: float  # noise of the last grid position, reused at an off-grid slice end
    metrics: dict[str, float]


class SyntheticTrainer:
    name = "synthetic"
    config_model: type[BaseModel] = SyntheticConfig
    metrics: tuple[str, ...] = ("loss", "accuracy")
    supports_mup = False

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        # Injectable so tests can check the emulated training time without waiting for it.
        self._sleep = sleep

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult:
        config = _config_of(request)
        positions = _positions_of(request, config)
        try:
            curve = curve_for(request.params, config.optimum)
        except ValueError as exc:
            raise TrainerError(str(exc)) from exc
        progress = _initial_progress(request)
        failure_index = _injected_failure_index(request, config, len(positions))

        for index, (position, on_grid) in enumerate(positions):
            if index == failure_index:
                raise RuntimeError(
                    f"synthetic failure injected before step {position:g} "
                    f"(fail_probability={config.fail_probability})"
                )
            if config.sleep_per_unit > 0:
                self._sleep(config.sleep_per_unit * (position - progress.budget_done))
            if on_grid:
                progress.last_noise = progress.rng.gauss(0.0, config.noise)
            loss = max(0.0, curve.loss_at(position) + progress.last_noise)
            progress.metrics = {"loss": loss, "accuracy": accuracy_from_loss(loss)}
            progress.budget_done = position
            reporter.log(f"step {position:g}/{request.budget_to:g} loss {loss:.4f}")
            if reporter.report(position, dict(progress.metrics)) == "stop":
                break

        write_state(request.checkpoint_out, request, progress)
        return TrainResult(metrics=dict(progress.metrics), budget_done=progress.budget_done)


TRAINER = SyntheticTrainer()


def _config_of(request: TrainRequest) -> SyntheticConfig:
    if isinstance(request.config, SyntheticConfig):
        return request.config
    # A worker may hand over another model with the same fields; validate it rather than trust it.
    try:
        return SyntheticConfig.model_validate(request.config.model_dump())
    except ValidationError as exc:
        raise TrainerError(f"invalid synthetic trainer config: {exc}") from exc


def _positions_of(request: TrainRequest, config: SyntheticConfig) -> list[tuple[float, bool]]:
    start, end = request.budget_from, request.budget_to
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise TrainerError(f"budget slice {start}->{end} must be finite and start at 0 or later")
    if end <= start:
        raise TrainerError(f"budget_to ({end}) must be greater than budget_from ({start})")
    if (end - start) / config.report_every > MAX_REPORTS_PER_SLICE:
        raise TrainerError(
            f"report_every={config.report_every} gives more than {MAX_REPORTS_PER_SLICE} "
            f"reports for the slice {start:g}->{end:g}; raise report_every"
        )
    return report_positions(start, end, config.report_every)


def _initial_progress(request: TrainRequest) -> Progress:
    if request.budget_from == 0:
        return Progress(0.0, random.Random(request.seed), 0.0, {})
    if request.checkpoint_in is None:
        raise CheckpointError(
            f"trial {request.trial_id}: resuming at budget {request.budget_from:g} "
            "needs a checkpoint, and none was given"
        )
    payload = read_state(request.checkpoint_in)
    try:
        progress = _progress_from_payload(payload)
        seed, digest = int(payload["seed"]), str(payload["params_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{request.checkpoint_in / STATE_FILE}: malformed state ({exc})") from exc
    _check_resumable(request, progress, seed, digest)
    return progress


def _check_resumable(request: TrainRequest, progress: Progress, seed: int, digest: str) -> None:
    """A checkpoint of another trial, seed or budget would silently break reproducibility."""
    where = request.checkpoint_in
    if seed != request.seed or digest != params_digest(request.params):
        raise CheckpointError(f"{where}: checkpoint belongs to other params or another seed")
    if abs(progress.budget_done - request.budget_from) > _BUDGET_TOLERANCE * max(
        1.0, request.budget_from
    ):
        raise CheckpointError(
            f"{where}: checkpoint is at budget {progress.budget_done:g}, "
            f"but the slice starts at {request.budget_from:g}"
        )


def _injected_failure_index(request: TrainRequest, config: SyntheticConfig, count: int) -> int | None:
    """Index of the position before which this slice fails, or None.

    Drawn from seed and slice (plus ``extra["attempt"]`` when the worker passes it), never
    from the noise generator, so fault tests are reproducible and the noise is unchanged.
    Without an attempt number a retry of the identical slice fails the same way again.
    """
    if config.fail_probability <= 0:
        return None
    attempt = request.extra.get("attempt", 0)
    draw = random.Random(f"fail:{request.seed}:{request.budget_from!r}:{request.budget_to!r}:{attempt}")
    if draw.random() >= config.fail_probability:
        return None
    return draw.randrange(count)


def params_digest(params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _checksum(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_state(folder: Path, request: TrainRequest, progress: Progress) -> None:
    """Write ``state.json``: JSON, not pickle, so a checkpoint can be read without running code."""
    version, internal, gauss_next = progress.rng.getstate()
    payload = {
        "budget_done": progress.budget_done,
        "seed": request.seed,
        "params_sha256": params_digest(request.params),
        "rng": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "last_noise": progress.last_noise,
        "metrics": progress.metrics,
    }
    document = {"format": STATE_FORMAT, "payload": payload, "sha256": _checksum(payload)}
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{STATE_FILE}.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / STATE_FILE)  # a crash never leaves a half-written state.json


def read_state(folder: Path) -> dict[str, Any]:
    """The verified payload of ``folder/state.json``; CheckpointError if missing or corrupt."""
    path = folder / STATE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: checkpoint file is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is unreadable ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("payload"), dict):
        raise CheckpointError(f"{path}: not a synthetic trainer checkpoint")
    if document.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {document.get('format')!r}")
    payload: dict[str, Any] = document["payload"]
    if document.get("sha256") != _checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    return payload


def _progress_from_payload(payload: dict[str, Any]) -> Progress:
    rng_state = payload["rng"]
    gauss_next = rng_state["gauss_next"]
    rng = random.Random()
    rng.setstate(
        (
            int(rng_state["version"]),
            tuple(int(word) for word in rng_state["internal"]),
            None if gauss_next is None else float(gauss_next),
        )
    )
    metrics = {str(key): float(value) for key, value in payload["metrics"].items()}
    return Progress(float(payload["budget_done"]), rng, float(payload["last_noise"]), metrics)
