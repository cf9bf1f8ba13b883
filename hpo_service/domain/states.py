"""Lifecycle states of studies and trials."""

from __future__ import annotations

from enum import StrEnum


class StudyStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (StudyStatus.COMPLETED, StudyStatus.FAILED, StudyStatus.CANCELLED)


class TrialState(StrEnum):
    PENDING = "pending"  # waiting for a worker to lease it (new, promoted or requeued)
    RUNNING = "running"  # leased by a worker
    PAUSED = "paused"  # finished a rung, waiting for the scheduler's decision
    COMPLETED = "completed"  # trained to its bracket's top budget
    STOPPED = "stopped"  # not promoted past a rung (or study ended while paused)
    FAILED = "failed"  # ran out of attempts or failed non-retryably

    @property
    def is_final(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED)


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def score(self, value: float) -> float:
        """Map an objective value to a score where lower is always better."""
        return value if self is Direction.MINIMIZE else -value

    def value_of(self, score: float) -> float:
        return score if self is Direction.MINIMIZE else -score
