"""Anytime curves, budget-to-target, speedups and ranks: pure functions of run records.

A run's record is its full-fidelity results in the order they finished, ``[(cost, accuracy)]``
where ``cost`` only grows (epochs spent, or simulated seconds). ``inf`` means "never": a run that
did not reach the target has budget-to-target ``inf``; the median of an odd number of seeds is
finite when more than half of them reached it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

INF = math.inf
Record = Sequence[tuple[float, float]]


def best_at(record: Record, grid: Sequence[float]) -> np.ndarray:
    """Best accuracy among results with cost <= each grid point (NaN before the first)."""
    out = np.full(len(grid), np.nan)
    best, index = -INF, 0
    ordered = sorted(record)
    for g, point in enumerate(grid):
        while index < len(ordered) and ordered[index][0] <= point:
            best = max(best, ordered[index][1])
            index += 1
        if best > -INF:
            out[g] = best
    return out


def final_best(record: Record) -> float:
    return max((acc for _, acc in record), default=math.nan)


def cost_to_reach(record: Record, target: float) -> float:
    """The cost at which the best-so-far first reaches ``target`` (inf if it never does)."""
    for cost, accuracy in sorted(record):
        if accuracy >= target:
            return float(cost)
    return INF


def median(values: Sequence[float]) -> float:
    """The median, inf-aware (sorted middle; the mean of the two middle values for an even count)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return INF if INF in (low, high) else (low + high) / 2


def median_low(values: Sequence[float]) -> float:
    """The lower middle value: the median for an odd count. A target set this way from n runs is
    reached by at least half of them (by more than half for an odd n)."""
    return sorted(values)[(len(values) - 1) // 2] if values else math.nan


def speedup(reference_cost: float, cost: float) -> float:
    """reference / method; 0 when only the reference got there, NaN when neither did."""
    if math.isinf(reference_cost) and math.isinf(cost):
        return math.nan
    if math.isinf(cost):
        return 0.0
    if cost == 0:
        return INF
    return reference_cost / cost


def average_ranks(costs: Mapping[str, float]) -> dict[str, float]:
    """Rank 1 = lowest cost; ties (inf included) share the average of their ranks."""
    ordered = sorted(costs.items(), key=lambda item: item[1])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1][1] == ordered[i][1]:
            j += 1
        for k in range(i, j + 1):
            ranks[ordered[k][0]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def finite_median(values: Sequence[float]) -> float:
    """Median over the values that are not NaN (NaN if none)."""
    kept = [v for v in values if not math.isnan(v)]
    return median(kept) if kept else math.nan


def mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan
