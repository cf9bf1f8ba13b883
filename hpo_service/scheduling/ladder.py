"""Rung geometry of a study whose ``max_budget`` was raised: a ladder of max budgets.

Iterative deepening (Brandt et al. 2023, "Iterative Deepening Hyperband") lets a
study that turned out to need a larger maximum budget keep what it trained. A study
starts with max budget ``R_0``; each raise ``R_{m-1} -> R_m`` puts the rungs
``deepening_rungs(R_{m-1}, R_m, eta)`` on top of every bracket that already belonged
to the study (opened or only planned), so a bracket's existing rungs never move and
the trials of its old top rung can train on from their checkpoints. The spec only
knows the newest maximum, so the ladder ``R_0 < R_1 < ...`` is kept in the scheduler
snapshot and everything here is computed from it.

A rung that was a bracket's top before a raise is where reuse happens: a promotion
out of it continues a trial that the old maximum would have ended there, so its
decision says so (``reuse_note``) and how much budget it saves against training that
configuration again from scratch (the budget of that rung).

Hyperband brackets are numbered in the order they are opened. Segment ``j`` (the
ladder step ``R_j``) plans ``brackets`` ids after those of segment ``j - 1``: segment
0 is the original ``iterations`` sweeps of ``s = s_max .. 0``; a later segment holds
the brackets of the larger Hyperband that the old ones do not cover, ``s = k - 1 .. 0``
with ``k`` the number of rungs the raise added, once per sweep. Inside a segment the
halvings cycle like an ordinary Hyperband: ``s = s_top - offset % (s_top + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from hpo_service.scheduling.rungs import (
    deepening_rungs,
    format_budget,
    hyperband_brackets,
    max_bracket_index,
    rung_budget,
)


@dataclass(frozen=True)
class Rungs:
    """The budgets of one bracket's rungs, and the rungs that were its top before a raise."""

    budgets: tuple[float, ...]
    raised: dict[int, tuple[float, float]] = field(default_factory=dict)  # rung -> (max before, max after)

    @property
    def top(self) -> int:
        return len(self.budgets) - 1

    def budget(self, rung: int) -> float:
        if not 0 <= rung <= self.top:
            raise ValueError(f"rung {rung} is outside 0..{self.top}")
        return self.budgets[rung]

    def reuse_note(self, rung: int) -> tuple[str, str]:
        """(prefix, suffix) for the reason of a promotion out of ``rung``; empty unless it is a reuse."""
        if rung not in self.raised:
            return "", ""
        before, after = self.raised[rung]
        here = format_budget(self.budgets[rung])
        return (
            f"budget raised {format_budget(before)} -> {format_budget(after)}: ",
            f"; continues from its checkpoint at {here} (saves {here})",
        )


class Ladder:
    """Max budgets, oldest first, and the rungs each raise added. Raises ValueError unless increasing."""

    def __init__(self, eta: int, max_budgets: Sequence[float]) -> None:
        if not max_budgets:
            raise ValueError("a ladder needs at least one max budget")
        self.eta = eta
        self.max_budgets = tuple(float(budget) for budget in max_budgets)
        self.added = tuple(
            deepening_rungs(before, after, eta) for before, after in zip(self.max_budgets, self.max_budgets[1:])
        )

    def stack(self, base: Sequence[float], segment: int) -> Rungs:
        """The rungs of a bracket of ladder step ``segment`` whose own rungs are ``base`` (top: its max)."""
        budgets = list(base)
        raised: dict[int, tuple[float, float]] = {}
        for step in range(segment, len(self.added)):
            raised[len(budgets) - 1] = (self.max_budgets[step], self.max_budgets[step + 1])
            budgets += self.added[step]
        return Rungs(tuple(budgets), raised)


class HyperbandGeometry:
    """Where each bracket id of a (possibly raised) Hyperband study starts, its rungs and its size.

    ``segments`` are ``(max_budget, brackets)`` pairs, oldest first (the snapshot's ``ladder``).
    """

    def __init__(self, min_budget: float, eta: int, segments: Sequence[tuple[float, int]]) -> None:
        self.ladder = Ladder(eta, [max_budget for max_budget, _ in segments])
        self._min_budget, self._eta = min_budget, eta
        self._counts = [count for _, count in segments]
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
        """Configurations the bracket starts with: Li et al.'s n for its s under its segment's max budget."""
        segment, s = self.locate(bracket)
        return self._starting_sizes[segment][s]

    def most_halvings(self) -> int:
        """The largest top rung index of any planned bracket (checked against the spec's rung cap)."""
        tops = [
            self._s_tops[segment] + sum(len(added) for added in self.ladder.added[segment:])
            for segment, count in enumerate(self._counts)
            if count > 0
        ]
        return max(tops, default=0)

    @cached_property
    def _starting_sizes(self) -> list[dict[int, int]]:
        """Per segment: s -> n of its Hyperband (computed on first use; most calls never need it)."""
        return [
            {plan.s: plan.rungs[0].n for plan in hyperband_brackets(self._min_budget, max_budget, self._eta)}
            for max_budget in self.ladder.max_budgets
        ]
