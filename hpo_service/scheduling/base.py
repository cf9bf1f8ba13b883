"""The scheduler contract: plain data in, typed actions out, no I/O.

A scheduler decides which configurations get more budget. It never touches the
database: it reads rung results through the narrow `RungPort` (the database
implements it with indexed queries, tests with `InMemoryRungPort`) and keeps its
own small bookkeeping in a JSON-able `dict` snapshot that the caller stores and
hands back on the next call. Calls for one study are serialised by the caller
(the per-study lock), so a scheduler never sees concurrent calls.

Scores are "lower is better" everywhere (the caller maps maximisation to
``-value``). Ties are broken by the lower trial id.

When each method is called
--------------------------
- ``initial_state()`` once, when the study is created.
- ``next_work(state, port)`` when a worker asks for work and no trial is
  pending. Returns at most one action: ``NewTrial`` (the caller samples params
  and creates the trial), ``Promote`` (ASHA's on-demand promotion), or ``None``
  when there is nothing to hand out right now.
- ``on_result(state, port, result)`` after a trial finished a segment and its
  result at ``result.rung`` was recorded (``port`` already contains it).
  Returns ``Finish`` for a trial at its bracket's top rung and, for synchronous
  Hyperband, the ``Promote``/``Stop`` decisions of a rung that just filled up.
- ``on_lost(state, port, trial_id, bracket, rung)`` when a trial failed for good
  while training toward ``rung`` (it will never report there).
- ``is_finished(state, port, in_flight)`` when ``next_work`` returned ``None``;
  ``in_flight`` counts trials that are pending or running. True means the study
  is complete: the caller stops every trial still paused.

None of these raise for well-formed input; a corrupt snapshot raises
``ValueError``.

The actions of ``on_result``/``on_lost`` may name trials other than the one
reported, in other brackets too: synchronous Hyperband decides a whole rung at
once, and when its promotions use up ``limits.total_budget`` the bracket still
being filled is cut short and may be decided in the same call. A snapshot is
only meaningful with the spec and limits that produced it (they are fixed for
a study's lifetime). Implementations never mutate the snapshot they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union

SchedulerState = dict[str, Any]


@dataclass(frozen=True)
class RungResult:
    """The score a trial reached when it finished training to a rung's budget."""

    trial_id: int
    bracket: int
    rung: int
    score: float


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class NewTrial:
    """Create a new configuration in ``bracket`` and train it to ``budget`` (rung ``rung``)."""

    bracket: int
    rung: int
    budget: float


@dataclass(frozen=True)
class Promote:
    """Resume ``trial_id`` from its checkpoint and train it on to ``budget`` (rung ``to_rung``)."""

    trial_id: int
    to_rung: int
    budget: float
    reason: str


@dataclass(frozen=True)
class Stop:
    """``trial_id`` is not promoted past its current rung; it ends as stopped."""

    trial_id: int
    reason: str


@dataclass(frozen=True)
class Finish:
    """``trial_id`` reached its bracket's top rung; it ends as completed."""

    trial_id: int
    reason: str


Action = Union[NewTrial, Promote, Stop, Finish]


# --- ports ---------------------------------------------------------------------


class RungPort(Protocol):
    """Read-only view of the results recorded at rungs, for one study.

    A result is "promoted" once a `Promote` action for its trial from that rung
    was applied by the caller.
    """

    def count(self, bracket: int, rung: int) -> int:
        """Number of results recorded at (bracket, rung)."""
        ...

    def best_unpromoted(self, bracket: int, rung: int) -> RungResult | None:
        """The lowest-score result at (bracket, rung) not yet promoted, or None."""
        ...

    def count_better(self, bracket: int, rung: int, result: RungResult) -> int:
        """Results at (bracket, rung) ranked ahead of ``result`` (lower score, or equal score and lower trial id)."""
        ...

    def ranked(self, bracket: int, rung: int) -> list[RungResult]:
        """All results at (bracket, rung), best first. Only for small rungs (synchronous brackets)."""
        ...


class Scheduler(Protocol):
    def initial_state(self) -> SchedulerState: ...

    def next_work(self, state: SchedulerState, port: RungPort) -> tuple[SchedulerState, Action | None]: ...

    def on_result(
        self, state: SchedulerState, port: RungPort, result: RungResult
    ) -> tuple[SchedulerState, list[Action]]: ...

    def on_lost(
        self, state: SchedulerState, port: RungPort, trial_id: int, bracket: int, rung: int
    ) -> tuple[SchedulerState, list[Action]]: ...

    def is_finished(self, state: SchedulerState, port: RungPort, in_flight: int) -> bool: ...

    def rung_budget(self, bracket: int, rung: int) -> float:
        """Budget a trial in ``bracket`` has trained when it reaches ``rung``."""
        ...
