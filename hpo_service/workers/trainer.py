"""The trainer plugin interface.

A trainer trains one configuration for one budget slice. It never talks to the
database or the network: the worker loop hands it a `TrainRequest`, a local
checkpoint folder to resume from (or None for a fresh start) and a `Reporter`,
and turns what it returns into API calls.

When each part is called
------------------------
- ``config_model`` validates the study's fixed ``trainer.params`` (server side, at
  study creation, and again in the worker).
- ``train(request, reporter)`` once per lease, in the worker process. It trains
  from ``request.budget_from`` to ``request.budget_to``, calls
  ``reporter.report`` at its report interval (steps are budget positions, e.g.
  epochs, and increase strictly), writes its checkpoint into
  ``request.checkpoint_out`` and returns the final metrics of the slice. It
  returns early, with a checkpoint if it can, when ``reporter.report`` answers
  ``"stop"``.

It may raise ``CheckpointError`` when ``checkpoint_in`` is missing or unreadable
(the worker reports a retryable failure and the server requeues the trial from an
earlier checkpoint or from scratch) and ``TrainerError`` for a configuration
that cannot train (non-retryable). Anything else is treated as retryable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

Directive = Literal["continue", "stop"]


class TrainerError(Exception):
    """The configuration cannot be trained; retrying will not help."""


class CheckpointError(Exception):
    """The checkpoint to resume from is missing or corrupt."""


@dataclass(frozen=True)
class TrainRequest:
    trial_id: int
    params: dict[str, Any]
    config: BaseModel  # the trainer's validated fixed params
    budget_from: float
    budget_to: float
    checkpoint_in: Path | None  # folder written by an earlier slice of this trial, or None
    checkpoint_out: Path  # empty folder to write this slice's checkpoint into
    seed: int  # fixed per trial: resuming must reproduce an uninterrupted run
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    budget_done: float
    wrote_checkpoint: bool = True


class Reporter(Protocol):
    def report(self, step: float, metrics: dict[str, float]) -> Directive:
        """Record metrics at a budget position; answers whether to keep training."""
        ...

    def log(self, message: str) -> None:
        """Progress line for the worker's log (steps, loss, tokens/s)."""
        ...


class Trainer(Protocol):
    name: str
    config_model: type[BaseModel]
    metrics: tuple[str, ...]  # metric names it reports
    supports_mup: bool

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult: ...
