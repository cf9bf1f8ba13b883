"""Rung geometry of a study whose ``max_budget`` was raised: a ladder of max budgets.

Iterative deepening (Brandt et al. 2023, "Iterative Deepening Hyperband") lets a
study that turned out to need a larger maximum budget keep what it trained. A study
starts with max budget ``R_0``; each raise ``R_{m-1} -> R_m`` puts the rungs
``deepening_rungs(R_{m-1}, R_m, eta)`` on top of every bracket that already belonged
to the study (opened or only planned), so a bracket's existing rungs never move and
the trials of its old top rung can train on from their checkpoints. The spec only
knows the newest maximum, so the ladder ``R_0 < R_1 < ...`` is kept in the scheduler
snapshot and everything here is computed from it.

A raise either tops the old brackets up (Hyperband's default, Brandt et al.'s efficient
variant: see hyperband.py) or not (ASHA, and Hyperband raised with ``top_up=False``). Without
a top-up, a rung that was a bracket's top before the raise is where reuse happens: a
promotion out of it continues a trial that the old maximum would have ended there, so its
decision says so (``reuse_note``) and how much budget it saves against training that
configuration again from scratch (the budget of that rung) -- for trials that existed at the
raise (ids up to the newest then); one created later was never going to stop there. With a
top-up, new trials reach that rung too, so reuse is declared per trial when the raise happens
instead, and the rung is not marked.

Hyperband brackets are numbered in the order they are opened. Segment ``j`` (the
ladder step ``R_j``) plans ``brackets`` ids after those of segment ``j - 1``: segment
0 is the original ``iterations`` sweeps of ``s = s_max .. 0``; a later segment holds
the brackets of the larger Hyperband that the old ones do not cover, ``s = k - 1 .. 0``
with ``k`` the number of rungs the raise added, once per sweep. Inside a segment the
halvings cycle like an ordinary Hyperband: ``s = s_top - offset % (s_top + 1)``.

A bracket's size (``n0``, the configurations its rung 0 gets) is Li et al.'s ``n`` for its
halvings under the Hyperband of the newest raise that topped up, or of its own segment when
no later raise did: a top-up makes every older bracket the larger Hyperband's bracket with the
same minimum budget (``s + k`` halvings, ``n = ceil((s_max' + 1) * eta**(s + k) / (s + k + 1))``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hpo_service.scheduling.rungs import (
    bracket_size,
    deepening_rungs,
    format_budget,
    max_bracket_index,
    rung_budget,
)


def max_budget_history(state: dict[str, Any] | None) -> list[float]:
    """The max budgets a study has had, oldest first, from its scheduler snapshot (ASHA keeps the
    ladder as numbers, Hyperband as steps with a ``max_budget``); empty for a scheduler without one."""
    steps = (state or {}).get("ladder") or []
    return [float(step["max_budget"] if isinstance(step, dict) else step) for step in steps]


@dataclass(frozen=True)
class Rungs:
    """The budgets of one bracket's rungs, and the rungs that were its top before a raise."""

    budgets: tuple[float, ...]
    # rung -> (max before, max after, newest trial id at the raise: None if unknown)
    raised: dict[int, tuple[float, float, int | None]] = field(default_factory=dict)

    @property
    def top(self) -> int:
        return len(self.budgets) - 1

    def budget(self, rung: int) -> float:
        if not 0 <= rung <= self.top:
            raise ValueError(f"rung {rung} is outside 0..{self.top}")
        return self.budgets[rung]

    def reuse_note(self, rung: int, trial_id: int) -> tuple[str, str]:
        """(prefix, suffix) for the reason of a decision on ``trial_id`` at ``rung``; empty unless a reuse.

        Only a trial that existed at the raise is one: the old max budget would have ended it at
        this rung. A trial created later (a bracket opened after the raise, an ASHA trial that
        climbed to this rung since) was always going to train on, and saves nothing. Trial ids
        grow in creation order; a raise recorded before the newest id was kept (None) marks all.
        """
        if rung not in self.raised:
            return "", ""
        before, after, newest = self.raised[rung]
        if newest is not None and trial_id > newest:
            return "", ""
        here = format_budget(self.budgets[rung])
        return (
            f"budget raised {format_budget(before)} -> {format_budget(after)}: ",
            f"; continues from its checkpoint at {here} (saves {here})",
        )


class Ladder:
    """Max budgets, oldest first, and the rungs each raise added. Raises ValueError unless increasing.

    ``top_ups[j]`` says whether the raise ``max_budgets[j] -> max_budgets[j + 1]`` topped the old
    brackets up (default: none did); ``newest[j]`` is the id of the newest trial at that raise
    (default: unknown, None).
    """

    def __init__(
        self, eta: int, max_budgets: Sequence[float], top_ups: Sequence[bool] = (),
        newest: Sequence[int | None] = (),
    ) -> None:
        if not max_budgets:
            raise ValueError("a ladder needs at least one max budget")
        self.eta = eta
        self.max_budgets = tuple(float(budget) for budget in max_budgets)
        self.added = tuple(
            deepening_rungs(before, after, eta) for before, after in zip(self.max_budgets, self.max_budgets[1:])
        )
        self.top_ups = tuple(top_ups) + (False,) * (len(self.added) - len(top_ups))
        self.newest: tuple[int | None, ...] = tuple(newest) + (None,) * (len(self.added) - len(newest))

    def stack(self, base: Sequence[float], segment: int) -> Rungs:
        """The rungs of a bracket of ladder step ``segment`` whose own rungs are ``base`` (top: its max).

        Old top rungs are marked as reuse points only for raises that did not top up.
        """
        budgets = list(base)
        raised: dict[int, tuple[float, float, int | None]] = {}
        for step in range(segment, len(self.added)):
            if not self.top_ups[step]:
                raised[len(budgets) - 1] = (self.max_budgets[step], self.max_budgets[step + 1], self.newest[step])
            budgets += self.added[step]
        return Rungs(tuple(budgets), raised)


class HyperbandGeometry:
    """Where each bracket id of a (possibly raised) Hyperband study starts, its rungs and its size.

    ``segments`` are ``(max_budget, brackets[, top_up[, newest_trial]])`` tuples, oldest first (the
    snapshot's ``ladder``); ``top_up`` (default False) says whether the raise that made the segment
    topped the older brackets up, ``newest_trial`` (default None: unknown) the id of the newest
    trial at that raise; both are ignored for segment 0.
    """

    def __init__(self, min_budget: float, eta: int, segments: Sequence[tuple[Any, ...]]) -> None:
        top_ups = [bool(segment[2]) if len(segment) > 2 else False for segment in segments[1:]]
        newest = [segment[3] if len(segment) > 3 else None for segment in segments[1:]]
        self.ladder = Ladder(eta, [segment[0] for segment in segments], top_ups, newest)
        self._min_budget, self._eta = min_budget, eta
        self._counts = [int(segment[1]) for segment in segments]
        self._firsts = [sum(self._counts[:j]) for j in range(len(segments))]
        self._s_tops = [max_bracket_index(min_budget, self.ladder.max_budgets[0], eta)] + [
            min(len(added) - 1, max_bracket_index(min_budget, self.ladder.max_budgets[j + 1], eta))
            for j, added in enumerate(self.ladder.added)
        ]
        self._rungs: dict[tuple[int, int], Rungs] = {}

    @property
    def planned(self) -> int:
        """Bracket ids ``0 .. planned - 1`` belong to the study."""
        return sum(self._counts)

    def locate(self, bracket: int) -> tuple[int, int]:
        """(segment, halvings when it was planned) of ``bracket``. Raises ValueError for an unplanned id."""
        for segment in range(len(self._counts) - 1, -1, -1):
            offset = bracket - self._firsts[segment]
            if 0 <= offset < self._counts[segment]:
                s_top = self._s_tops[segment]
                return segment, s_top - offset % (s_top + 1)
        raise ValueError(f"bracket {bracket} is not one of the study's {self.planned} brackets")

    def rungs(self, bracket: int) -> Rungs:
        segment, s = self.locate(bracket)
        key = (segment, s)
        if key not in self._rungs:
            max_budget = self.ladder.max_budgets[segment]
            base = [rung_budget(max_budget, self._eta, s, rung) for rung in range(s + 1)]
            self._rungs[key] = self.ladder.stack(base, segment)
        return self._rungs[key]

    def n0(self, bracket: int) -> int:
        """Configurations the bracket starts with: Li et al.'s n for its halvings under the max budget of
        the newest raise that topped it up, else of its own segment."""
        segment, s = self.locate(bracket)
        sizing = segment
        for step in range(segment, len(self.ladder.added)):
            if self.ladder.top_ups[step]:
                sizing = step + 1
        halvings = s + sum(len(added) for added in self.ladder.added[segment:sizing])
        return bracket_size(self._s_maxes[sizing], self._eta, halvings)

    def most_halvings(self) -> int:
        """The largest top rung index of any planned bracket (checked against the spec's rung cap)."""
        tops = [
            self._s_tops[segment] + sum(len(added) for added in self.ladder.added[segment:])
            for segment, count in enumerate(self._counts)
            if count > 0
        ]
        return max(tops, default=0)

    @cached_property
    def _s_maxes(self) -> list[int]:
        """Per segment: ``s_max`` of the Hyperband with its max budget."""
        return [max_bracket_index(self._min_budget, max_budget, self._eta) for max_budget in self.ladder.max_budgets]
