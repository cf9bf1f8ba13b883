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
- ``extend(state, port, old_max_budget)`` once per raise of ``spec.max_budget``
  (iterative deepening), under the study lock, on a scheduler built from the NEW
  spec (only ``max_budget`` differs) with the state made under ``old_max_budget``,
  on a running or a finished study. Returns the new state and the actions to apply
  now. From then on every other method takes the new spec and the returned state.
  A study may be raised any number of times (27 -> 81 -> 243).
- ``rung_budget(bracket, rung, state)`` whenever the caller needs a rung's budget;
  pass the study's snapshot. Without it the answer is for a study never raised.

None of these raise for well-formed input; a corrupt snapshot raises
``ValueError``, and so does a snapshot whose newest max budget is not the spec's
(a raise that did not go through ``extend``). ``extend`` raises ``ValueError``,
with a message for people, when the raise is refused: the new max budget is not
larger (the message says "must grow"), the state was not made under
``old_max_budget``, a bracket would get more than ``MAX_RUNGS`` halvings, or the
scheduler cannot be raised at all (random search).

After a raise, trials that *completed* at the old max budget are ordinary results
of a rung that is no longer the top. ``extend``, and later ``on_result`` /
``on_lost`` (when such a rung settles), may therefore return ``Promote`` for a
completed trial (the caller makes it pending again; it resumes from its checkpoint
at that rung) and, from Hyperband, ``Stop`` for one that is not continued (it
ends as stopped: completed means it reached the study's max budget).

Reuse is recorded in one of two ways. Hyperband's default raise (``top_up``, Brandt
et al.'s efficient variant) keeps every old bracket's trials with their results and
tops the bracket up with new configurations: ``extend`` returns one ``Reuse`` per
trial kept (nothing to run; the caller logs it), whose ``budget`` is what not training
it again saves, and later decisions may ``Promote`` a trial that was *stopped* before
the raise (the larger bracket promotes more; it resumes from its checkpoint). Without
a top-up (ASHA; Hyperband with ``top_up=False``), a promotion out of a rung that was
the top before a raise is the reuse; its reason starts with ``budget raised R -> R':``
and ends with ``continues from its checkpoint at B (saves B)``, B being the budget
that a restart would train again; only for a trial that existed at the raise (the snapshot
keeps the newest trial id of each raise), since one created later saves nothing.

The actions of ``on_result``/``on_lost`` may name trials other than the one
reported, in other brackets too: synchronous Hyperband decides a whole rung at
once, and when its promotions use up ``limits.total_budget`` the bracket still
being filled is cut short and may be decided in the same call. A snapshot is
only meaningful with the spec and limits that produced it (they are fixed for
a study's lifetime, except ``max_budget`` raised through ``extend``).
Implementations never mutate the snapshot they are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Union

SchedulerState = dict[str, Any]


@dataclass(frozen=True)
class RungResult:
    """The score a trial reached when it finished training to a rung's budget."""

    trial_id: int
    bracket: int
    rung: int
    score: float
    budget: float | None = None  # the rung's budget, where the port knows it


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class NewTrial:
    """Create a new configuration in ``bracket`` and train it to ``budget`` (rung ``rung``).

    By default the sampler proposes the parameters. ``copy_of`` starts from another
    trial's parameters instead (muP transfer trains a proxy's configuration at the
    target width); then ``scale`` multiplies some of them (a check sweep) and finally
    ``overrides`` sets some (the width or rank), for proposed and copied parameters alike.
    """

    bracket: int
    rung: int
    budget: float
    copy_of: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Promote:
    """Resume ``trial_id`` from its checkpoint and train it on to ``budget`` (rung ``to_rung``).

    The trial is paused, or completed when its rung was the top before a raise of max_budget.
    """

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


@dataclass(frozen=True)
class Reuse:
    """After a raise of max_budget, ``trial_id`` keeps its results (up to ``budget``) in its bracket.

    Nothing to run or change: the caller records the decision. ``budget`` is what the trial
    trained before the raise, which a study started again at the new max budget would train again.
    """

    trial_id: int
    budget: float
    reason: str


Action = Union[NewTrial, Promote, Stop, Finish, Reuse]


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

    def promoted_ids(self, bracket: int, rung: int) -> set[int]:
        """Trial ids whose result at (bracket, rung) was promoted (including trials lost afterwards)."""
        ...

    def in_flight(self, bracket_lo: int, bracket_hi: int) -> int:
        """Trials pending or running in brackets ``bracket_lo <= b < bracket_hi`` (stage schedules)."""
        ...

    def best_at_budget(self, bracket_lo: int, bracket_hi: int, budget: float, k: int) -> list[RungResult]:
        """The ``k`` best results trained to ``budget`` in brackets ``bracket_lo <= b < bracket_hi``."""
        ...

    def newest_trial_id(self) -> int | None:
        """The id of the study's newest trial (ids grow in creation order), None before the first.

        Asked when max_budget is raised: trials up to it existed at the raise (reuse is theirs).
        """
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

    def extend(
        self, state: SchedulerState, port: RungPort, old_max_budget: float
    ) -> tuple[SchedulerState, list[Action]]:
        """Raise the study's max budget from ``old_max_budget`` to this spec's; see the module docstring."""
        ...

    def rung_budget(self, bracket: int, rung: int, state: SchedulerState | None = None) -> float:
        """Budget a trial in ``bracket`` has trained when it reaches ``rung``.

        ``state`` is the study's snapshot: a raised study's brackets (and the rungs put
        on top of old ones) exist only there. None answers for a study never raised.
        """
        ...
