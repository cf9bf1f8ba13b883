"""Per-rung totals of a study (trials by bracket, rung and state; results by bracket, rung and
budget), kept incrementally for the dashboard.

At 100,000 trials the two GROUP BYs behind the Hyperband view, the budget levels and the top
trials cost tens of milliseconds each on every study version. But a trial in a final state
(completed, stopped, failed) never changes again, nor do its results, and new trials get new,
larger ids. So the totals of the trials with ids below a watermark -- every one of them final --
are summed once and kept, and each read only aggregates the trials from the watermark on: the
ones still in play and those created after them.

The watermark is the oldest trial not yet final, and no newer than the trials created
``LATE_COMMIT_S`` ago (a trial created just now may belong to a transaction that has not
committed yet, and be invisible to this read while a newer one is visible).

The one thing that brings a final trial back is raising the study's ``max_budget``: iterative
deepening continues finished trials, and the old top rung's other trials turn from completed to
stopped later, when their bracket's new rung is decided. So a study that was ever raised keeps
nothing (every read counts everything, once per study version), and a trial found open below
the watermark anyway drops what was kept.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hpo_service.db import dashboard_queries as dq

CountKey = tuple[int, int, str]  # bracket, rung, state
ResultKey = tuple[int, int, float]  # bracket, rung, budget
ResultCell = tuple[int, int, float]  # results, promoted, best score


class RungTotals:
    """A study's totals at one moment. Dicts rather than rows: a study of 100,000 trials has
    ~10,000 cells, and the kept ones are shared with the ledger instead of copied into new tuples
    (allocation is what makes a request of this size pay for the garbage collector)."""

    def __init__(self, counts: dict[CountKey, int], results: dict[ResultKey, ResultCell]) -> None:
        self.counts = counts  # (bracket, rung, state) -> trials
        self.results = results  # (bracket, rung, budget) -> (results, promoted, best score)
        self._summary: list[tuple[int, int, float, int, int, float]] | None = None
        self._levels: list[tuple[float, int]] | None = None

    def summary(self) -> list[tuple[int, int, float, int, int, float]]:
        """(bracket, rung, budget, results, promoted, best score) per rung (the largest budget)."""
        if self._summary is None:
            cells: dict[tuple[int, int], tuple[float, int, int, float]] = {}
            for (bracket, rung, budget), (n, promoted, best) in self.results.items():
                cell = cells.get((bracket, rung))
                cells[(bracket, rung)] = (budget, n, promoted, best) if cell is None else (
                    max(cell[0], budget), cell[1] + n, cell[2] + promoted, min(cell[3], best))
            self._summary = [(b, r, *cell) for (b, r), cell in cells.items()]
        return self._summary

    def levels(self) -> list[tuple[float, int]]:
        """(budget, results) per budget level, highest first."""
        if self._levels is None:
            per_budget: dict[float, int] = defaultdict(int)
            for (_bracket, _rung, budget), (n, _promoted, _best) in self.results.items():
                per_budget[budget] += n
            self._levels = sorted(per_budget.items(), reverse=True)
        return self._levels


def ledger_terms(study: Any) -> tuple[Hashable, bool]:
    """(signature, keep) of a study row for ``RungLedger.read``: the kept totals belong to one
    study and one ``max_budget``, and a study that was ever raised (its scheduler snapshot's
    ladder has more than one step) keeps nothing."""
    ladder = (study.scheduler_state or {}).get("ladder")
    raised = isinstance(ladder, list) and len(ladder) > 1
    return (study.created_at, study.spec["scheduler"]["max_budget"]), not raised


@dataclass
class RungLedger:
    """The kept totals of one study: trials with ids below ``watermark``, all final."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    signature: Hashable = None
    watermark: int = 0
    counts: dict[CountKey, int] = field(default_factory=dict)
    results: dict[ResultKey, ResultCell] = field(default_factory=dict)

    def read(self, session: Session, study_id: int, signature: Hashable, settled_before: datetime,
             keep: bool = True) -> RungTotals:
        """The study's totals now; moves the watermark up first where it can (only with ``keep``:
        False for a study whose finished trials may still change, one that was raised)."""
        with self.lock:
            if signature != self.signature or not keep:
                self.signature, self.watermark, self.counts, self.results = signature, 0, {}, {}
            target = self._settled_up_to(session, study_id, settled_before) if keep else 0
            if target < self.watermark:  # a kept trial is in play again: count everything anew
                self.watermark, self.counts, self.results = 0, {}, {}
            if target > self.watermark:
                _add_counts(self.counts, dq.trial_counts_by_rung(session, study_id, self.watermark, target))
                _add_results(self.results, dq.rung_totals(session, study_id, self.watermark, target))
                self.watermark = target
            counts, results, lo = dict(self.counts), dict(self.results), self.watermark
        _add_counts(counts, dq.trial_counts_by_rung(session, study_id, lo))
        _add_results(results, dq.rung_totals(session, study_id, lo))
        return RungTotals(counts, results)

    @staticmethod
    def _settled_up_to(session: Session, study_id: int, settled_before: datetime) -> int:
        """The first trial id that may still change (every trial below it is final and committed)."""
        committed = dq.newest_trial_id_before(session, study_id, settled_before)
        if committed is None:
            return 0
        first_open = dq.first_open_trial_id(session, study_id)
        return committed + 1 if first_open is None else min(first_open, committed + 1)


def _add_counts(into: dict[CountKey, int], rows: list[tuple[int, int, str, int]]) -> None:
    for bracket, rung, state, n in rows:
        into[(bracket, rung, state)] = into.get((bracket, rung, state), 0) + n


def _add_results(into: dict[ResultKey, ResultCell], rows: list[tuple[int, int, float, int, int, float]]) -> None:
    for bracket, rung, budget, n, promoted, best in rows:
        cell = into.get((bracket, rung, budget))
        into[(bracket, rung, budget)] = (n, promoted, best) if cell is None else (
            cell[0] + n, cell[1] + promoted, min(cell[2], best))
