"""The budget accounting every method is charged by, and what one run records.

- The cost of an evaluation is the epochs it trains. Service budgets are fractional (52 / 3**k
  with min 1, max 52, eta 3: 1.93, 5.78, 17.3, 52); a segment from budget a to b trains epochs
  ``ceil(a) + 1 .. ceil(b)`` and costs ``ceil(b) - ceil(a)``, and the surrogate is queried at
  ``ceil(b)``. A resumed (promoted) trial pays only its new epochs; a stopped trial paid what it
  trained. A method that cannot resume (DEHB, random search, Optuna without pruning) pays every
  evaluation from epoch 0.
- A run may spend ``total_epochs`` (100 full trainings of 52 epochs). Evaluations are charged in
  the order they run; the run ends at the first one that does not fit in what is left.
- The anytime curve is the best validation accuracy among evaluations that reached epoch 52,
  against the epochs spent when each of them finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from bench.lcbench import MAX_EPOCHS, Y_NAMES, LCBench

FULL_TRAININGS = 100
TOTAL_EPOCHS = FULL_TRAININGS * MAX_EPOCHS
_TIME, _ACCURACY = Y_NAMES.index("time"), Y_NAMES.index("val_accuracy")


def epochs_of(budget: float) -> int:
    """Whole epochs a service budget stands for (rounded up; budgets are exact ratios of 52)."""
    return max(0, math.ceil(budget - 1e-9))


@dataclass(frozen=True)
class Segment:
    """What training a configuration from epoch ``start`` to ``end`` gave."""

    accuracy: float  # validation accuracy (percent) at ``end``
    seconds: float  # surrogate training time of epochs start+1 .. end (>= 0)


class TaskObjective:
    """One LCBench task: train a configuration from one epoch to another."""

    def __init__(self, bench: LCBench, task: str) -> None:
        self.bench, self.task = bench, task

    def train(self, params: Mapping[str, Any], start: int, end: int) -> Segment:
        if not 0 <= start < end <= MAX_EPOCHS:
            raise ValueError(f"cannot train from epoch {start} to {end} (1..{MAX_EPOCHS})")
        if start == 0:
            row = self.bench.predict(self.task, [params], [end])[0]
            return Segment(float(row[_ACCURACY]), max(0.0, float(row[_TIME])))
        before, after = self.bench.predict(self.task, [params, params], [start, end])
        return Segment(float(after[_ACCURACY]), max(0.0, float(after[_TIME] - before[_TIME])))

    def accuracies(self, params: Mapping[str, Any], epochs: list[int]) -> list[float]:
        """Validation accuracy at each of ``epochs`` (one surrogate batch)."""
        return [float(row[_ACCURACY]) for row in self.bench.curve(self.task, params, epochs)]


@dataclass
class Ledger:
    """Epochs spent by one run, and its full-fidelity results in the order they finished."""

    total_epochs: int = TOTAL_EPOCHS
    spent: int = 0
    evaluations: int = 0
    full: list[tuple[int, float]] = field(default_factory=list)  # (spent when it finished, accuracy)

    def fits(self, epochs: int) -> bool:
        return self.spent + epochs <= self.total_epochs

    def charge(self, epochs: int, end_epoch: int, accuracy: float, ends_evaluation: bool = True) -> None:
        """Training ``epochs`` more, ending at ``end_epoch`` with ``accuracy``.

        ``ends_evaluation=False`` for an epoch of a trial that goes on (Optuna's per-epoch loop).
        """
        if epochs < 0 or not self.fits(epochs):
            raise ValueError(f"charging {epochs} epochs with {self.total_epochs - self.spent} left")
        self.spent += epochs
        self.evaluations += int(ends_evaluation)
        if end_epoch >= MAX_EPOCHS:
            self.full.append((self.spent, accuracy))


@dataclass
class RunResult:
    """One (method, task, seed) run, JSON-able."""

    method: str
    task: str
    seed: int
    total_epochs: int
    spent: int
    evaluations: int
    configurations: int
    full: list[tuple[int, float]]
    compute_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "task": self.task, "seed": self.seed, "total_epochs": self.total_epochs,
                "spent": self.spent, "evaluations": self.evaluations, "configurations": self.configurations,
                "full": [list(pair) for pair in self.full], "compute_seconds": round(self.compute_seconds, 3),
                "extra": self.extra}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunResult:
        return cls(raw["method"], str(raw["task"]), int(raw["seed"]), int(raw["total_epochs"]), int(raw["spent"]),
                   int(raw["evaluations"]), int(raw["configurations"]),
                   [(int(s), float(a)) for s, a in raw["full"]], float(raw["compute_seconds"]),
                   dict(raw.get("extra", {})))
