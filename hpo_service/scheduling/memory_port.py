"""`RungPort` over in-process lists: for tests, simulations and benchmarks.

The database implements the same queries with indexes; this one keeps each rung
as a list sorted by ``(score, trial_id)`` (the port's ranking, ties to the lower
trial id) plus a second sorted list of the results not yet promoted, so every
query is a bisect or a slice rather than a scan.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort

from hpo_service.scheduling.base import RungResult

_Key = tuple[float, int]  # (score, trial_id): the ranking order


class InMemoryRungPort:
    """Rung results of one study, in memory. Not thread-safe (callers serialise per study)."""

    def __init__(self) -> None:
        self._ranked: dict[tuple[int, int], list[_Key]] = {}
        self._unpromoted: dict[tuple[int, int], list[_Key]] = {}
        self._results: dict[tuple[int, int], RungResult] = {}  # (trial_id, rung) -> result
        self._promoted: set[tuple[int, int]] = set()  # (trial_id, rung)
        # Trials in flight per bracket: a simulation driver keeps this up to date
        # (start/finish), since this port never sees trial states otherwise.
        self.in_flight_by_bracket: dict[int, int] = {}
        # The newest trial id: raised by every result, and by ``created`` for drivers that call it
        # (a trial in flight toward its first result is otherwise unknown here).
        self._newest: int | None = None

    # --- writes (the caller's side) ---------------------------------------------------

    def created(self, trial_id: int) -> None:
        """A trial was created (ids grow in creation order)."""
        self._newest = trial_id if self._newest is None else max(self._newest, trial_id)

    def record(self, result: RungResult) -> None:
        """Store a trial's result at a rung. Raises ValueError for a NaN score or a repeat."""
        if math.isnan(result.score):
            raise ValueError(f"trial {result.trial_id}: a NaN score cannot be ranked")
        if (result.trial_id, result.rung) in self._results:
            raise ValueError(f"trial {result.trial_id} already has a result at rung {result.rung}")
        self.created(result.trial_id)
        self._results[(result.trial_id, result.rung)] = result
        key = (result.score, result.trial_id)
        insort(self._ranked.setdefault((result.bracket, result.rung), []), key)
        insort(self._unpromoted.setdefault((result.bracket, result.rung), []), key)

    def mark_promoted(self, trial_id: int, rung: int) -> None:
        """The trial's result at ``rung`` was promoted (to ``rung + 1``).

        Raises ValueError when there is no such result or it was promoted already.
        """
        result = self._results.get((trial_id, rung))
        if result is None:
            raise ValueError(f"trial {trial_id} has no result at rung {rung} to promote")
        if (trial_id, rung) in self._promoted:
            raise ValueError(f"trial {trial_id} was already promoted from rung {rung}")
        self._promoted.add((trial_id, rung))
        unpromoted = self._unpromoted[(result.bracket, result.rung)]
        del unpromoted[bisect_left(unpromoted, (result.score, trial_id))]

    def is_promoted(self, trial_id: int, rung: int) -> bool:
        return (trial_id, rung) in self._promoted

    # --- RungPort ---------------------------------------------------------------------

    def count(self, bracket: int, rung: int) -> int:
        return len(self._ranked.get((bracket, rung), ()))

    def best_unpromoted(self, bracket: int, rung: int) -> RungResult | None:
        unpromoted = self._unpromoted.get((bracket, rung))
        if not unpromoted:
            return None
        return self._results[(unpromoted[0][1], rung)]

    def count_better(self, bracket: int, rung: int, result: RungResult) -> int:
        return bisect_left(self._ranked.get((bracket, rung), []), (result.score, result.trial_id))

    def ranked(self, bracket: int, rung: int) -> list[RungResult]:
        return [self._results[(trial_id, rung)] for _, trial_id in self._ranked.get((bracket, rung), [])]

    def promoted_ids(self, bracket: int, rung: int) -> set[int]:
        return {trial_id for _, trial_id in self._ranked.get((bracket, rung), []) if (trial_id, rung) in self._promoted}

    def in_flight(self, bracket_lo: int, bracket_hi: int) -> int:
        return sum(n for b, n in self.in_flight_by_bracket.items() if bracket_lo <= b < bracket_hi)

    def newest_trial_id(self) -> int | None:
        return self._newest

    def best_at_budget(self, bracket_lo: int, bracket_hi: int, budget: float, k: int) -> list[RungResult]:
        found = [r for r in self._results.values()
                 if bracket_lo <= r.bracket < bracket_hi and r.budget is not None and math.isclose(r.budget, budget)]
        return sorted(found, key=lambda r: (r.score, r.trial_id))[:k]
