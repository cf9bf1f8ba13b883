"""A study's optimization history, kept up to date by reading only the results that are new.

Results (rung_results rows) are append-only, so the history of a study is a running
computation: cumulative budget, the best value per budget level, and a sample of
points. `HistoryLog` keeps that state in the API process: the first view after a start
takes it from one ordered pass in the database (window functions; only the sample and
the improvements leave it), and every later request consumes only the rows stored since
the one before: a refresh of a 100,000-trial study reads a handful of rows.

The sample is a grid of every ``base``-th result (``base`` a power of two, doubled
whenever the grid outgrows ``GRID_CAP``), so that any ``max_points`` up to half the
cap can be served from it. Ids come from a sequence and may commit out of order:
results younger than ``LATE_COMMIT_S`` stay above the watermark and are read again
(and skipped) until they are older, so a late commit is not lost (assuming a result's
transaction lasts less than that).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

GRID_CAP = 10_000  # serves max_points up to GRID_CAP // 2
LATE_COMMIT_S = 5.0


class Point(NamedTuple):
    seq: int  # 1-based position in completion order
    trial_id: int
    budget: float
    value: float
    budget_spent: float


@dataclass
class HistoryLog:
    base: int = 1
    total: int = 0
    spent: float = 0.0
    watermark: int = 0  # every result id <= watermark was committed when last read
    grid: list[Point] = field(default_factory=list)
    records: list[Point] = field(default_factory=list)  # every improvement of a level's best
    last: Point | None = None
    best: dict[float, float] = field(default_factory=dict)  # budget -> best score
    recent: set[int] = field(default_factory=set)  # consumed ids above the watermark
    numbers: dict[int, int] = field(default_factory=dict)  # trial id -> number (never changes) of points shown
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, total: int, rows: list[tuple[Any, ...]], upto: int, value_of: Callable[[float], float]) -> None:
        """Begin from a database pass over the results up to id ``upto`` (dashboard_queries.history_start):
        rows (seq, trial_id, budget, score, spent, improves) at ``self.base``, the last, the improvements."""
        for seq, trial_id, budget, score, spent, improves in rows:
            point = Point(int(seq), int(trial_id), float(budget), value_of(score), float(spent))
            if (point.seq - 1) % self.base == 0:
                self.grid.append(point)
            if improves:
                self.records.append(point)
                self.best[point.budget] = float(score)
            if point.seq == total:
                self.last = point
        self.total, self.spent = total, self.last.budget_spent if self.last else 0.0
        self.watermark = upto

    def base_for(self, total: int) -> int:
        base = 1
        while total / base > GRID_CAP:
            base *= 2
        return base

    def consume(self, rows: Iterable[tuple[Any, ...]], value_of: Callable[[float], float]) -> int:
        """Add results read after ``watermark``: (id, trial_id, budget, score, budget spent on it) in
        id order; rows consumed before are skipped. Returns how many were new."""
        rows = list(rows)
        while (self.total + len(rows)) / self.base > GRID_CAP:  # thin before, not after, a big read
            self.base *= 2
            self.grid = [p for p in self.grid if (p.seq - 1) % self.base == 0]
        best, grid, records, recent = self.best, self.grid, self.records, self.recent
        total, spent, base = self.total, self.spent, self.base
        last = None
        for result_id, trial_id, budget, score, trained in rows:
            if result_id in recent:
                continue
            recent.add(result_id)
            total += 1
            spent += trained
            improves = score < best.get(budget, math.inf)
            on_grid = (total - 1) % base == 0
            last = (total, trial_id, budget, score, spent)
            if improves or on_grid:
                point = Point(total, trial_id, budget, value_of(score), spent)
                if improves:
                    best[budget] = score
                    records.append(point)
                if on_grid:
                    grid.append(point)
                    if len(grid) > GRID_CAP:
                        grid = grid[::2]
                        base *= 2
        added = total - self.total
        self.total, self.spent, self.base, self.grid = total, spent, base, grid
        if last is not None:
            self.last = Point(last[0], last[1], last[2], value_of(last[3]), last[4])
        return added

    def settle(self, committed_up_to: int | None) -> None:
        """Ids up to ``committed_up_to`` (results older than ``LATE_COMMIT_S``) will not change:
        stop re-reading them."""
        if committed_up_to is not None and committed_up_to > self.watermark:
            self.watermark = committed_up_to
            self.recent = {i for i in self.recent if i > committed_up_to}

    def sample(self, max_points: int) -> tuple[int, list[Point]]:
        """(stride, points): the first result, every stride-th and the last, at most ``max_points``
        (>= 3); stride is the smallest power of two (>= base) that fits."""
        stride = self.base
        while self.total > 1 and (self.total - 1) / stride > max_points - 2:
            stride *= 2
        points = [p for p in self.grid if (p.seq - 1) % stride == 0]
        if self.last is not None and (not points or points[-1].seq != self.last.seq):
            points.append(self.last)
        return stride, points

    @property
    def levels(self) -> list[float]:
        return sorted(self.best)
