"""The pure steps that turn the dashboard's query rows into its views (`dashboard_views`)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from hpo_service.db.dashboard_table import SORTABLE, ParamCondition, TableQuery
from hpo_service.domain.space import CategoricalDistribution
from hpo_service.domain.spec import StudySpec
from hpo_service.domain.states import TrialState
from hpo_service.errors import InvalidInput
from hpo_service.orchestration.context import as_utc
from hpo_service.orchestration.dashboard_views import (
    Attempt,
    Curve,
    HyperbandView,
    ParamAxis,
    RungCell,
    RungMark,
    decision_row,
)

_END_OUTCOME = {TrialState.STOPPED.value: "stopped", TrialState.COMPLETED.value: "finished",
                TrialState.FAILED.value: "failed"}


def hyperband_view(counts: dict[tuple[int, int, str], int], summary: list[tuple[Any, ...]],
                   geometry: Callable[[int], Hashable], max_rows: int, direction: Any,
                   planned_budget: Callable[[int, int], float]) -> HyperbandView:
    """Brackets x rungs from trial counts ((bracket, rung, state) -> trials) and rung results (bracket,
    rung, budget, results, promoted, best score); entered = trials at this rung or above. With more
    than ``max_rows`` brackets, brackets of the same ``geometry`` are summed into one row, named
    after its first bracket."""
    ids = sorted({c[0] for c in counts} | {r[0] for r in summary})  # counts: its keys
    grouped = len(ids) > max_rows
    first_of: dict[Hashable, int] = {}
    group_of: dict[int, int] = {}
    for bracket in ids:
        group_of[bracket] = first_of.setdefault(geometry(bracket), bracket) if grouped else bracket
    members: dict[int, int] = defaultdict(int)
    for bracket in ids:
        members[group_of[bracket]] += 1
    states: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (bracket, rung, state), n in counts.items():
        states[(group_of[bracket], rung)][state] += n
    results: dict[tuple[int, int], list[Any]] = {}
    for bracket, rung, budget, n, promoted, best in summary:
        cell = results.setdefault((group_of[bracket], rung), [budget, 0, 0, best])
        cell[1:] = [cell[1] + n, cell[2] + promoted, min(cell[3], best)]
    rungs_of: dict[int, set[int]] = defaultdict(set)
    for group, rung in [*states, *results]:
        rungs_of[group].add(rung)
    cells = []
    for group, rungs in rungs_of.items():
        entered = 0
        for rung in sorted(rungs, reverse=True):
            here = states.get((group, rung), {})
            entered += sum(here.values())
            budget, finished, promoted, best = results.get((group, rung), (planned_budget(group, rung), 0, 0, None))
            cells.append(RungCell(
                group, members[group], rung, float(budget), entered,
                here.get("pending", 0) + here.get("running", 0), here.get("paused", 0), finished, promoted,
                here.get("stopped", 0), here.get("completed", 0), here.get("failed", 0),
                direction.value_of(best) if best is not None else None))
    cells.sort(key=lambda c: (c.bracket, c.rung))
    return HyperbandView(grouped, len(ids), cells)


def rung_marks(trial: Any, results: Iterable[Any], decisions: Iterable[Any]) -> list[RungMark]:
    """The trial's rung results with what was decided there and why (promote/stop/finish, in order).

    A raised study's top-up keeps a finished trial with its result (a ``reuse`` decision): until
    the larger bracket decides, its last rung is waiting again, whatever the trial's state says.
    ``decisions`` come in the order they were made (by id).
    """
    mine = sorted((r for r in results if r.trial_id == trial.id), key=lambda r: r.rung)
    verdicts = [d for d in decisions if d.trial_id == trial.id and d.kind in ("promote", "stop", "finish", "reuse")]
    promotes = [d.reason for d in verdicts if d.kind == "promote"]
    endings = [d.reason for d in verdicts if d.kind in ("stop", "finish")]
    kept = verdicts[-1].reason if verdicts and verdicts[-1].kind == "reuse" else None
    marks = []
    for index, result in enumerate(mine):
        last = index == len(mine) - 1
        if result.promoted:
            outcome, reason = "promoted", promotes.pop(0) if promotes else None
        elif last and kept is not None:
            outcome, reason = "waiting", kept
        elif last and trial.state in _END_OUTCOME:
            outcome, reason = _END_OUTCOME[trial.state], endings[-1] if endings else None
        else:
            outcome, reason = "waiting", None
        marks.append(RungMark(result.rung, result.budget, result.value, outcome, reason))
    return marks


def curve_of(trial: Any, top: bool, metric: str, reports: list[tuple[Any, ...]], results: list[Any],
             decisions: list[Any]) -> Curve:
    points = [[step, number_or_none(metrics.get(metric))] for _t, step, _a, metrics in reports]
    events = [decision_row(d) for d in decisions if d.kind in ("requeue", "fail")]
    return Curve(trial.id, trial.number, trial.bracket, trial.rung, trial.state, top, trial.value, points,
                 rung_marks(trial, results, decisions), events)


def by_trial(rows: Iterable[Any], key: Any) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return grouped


def attempt_rows(aggregates: list[tuple[Any, ...]], trial_attempt: int, decisions: list[Any]) -> list[Attempt]:
    """One row per attempt 1..current, with the decision that ended it (requeue, fail, stop, finish)."""
    found = {int(a): row for a, *row in aggregates}
    rows = []
    for attempt in range(1, max([trial_attempt, *found]) + 1):
        count, first, last, started, ended = found.get(attempt, (0, None, None, None, None))
        end = next((d for d in decisions if (d.kind == "requeue" and d.attempt == attempt + 1)
                    or (d.kind in ("fail", "stop", "finish") and d.attempt == attempt)), None)
        rows.append(Attempt(attempt, int(count), first, last, as_utc(started), as_utc(ended),
                            decision_row(end) if end else None))
    return rows


def level_with_data(levels: list[tuple[float, int]], budget: float | None, minimum: int) -> tuple[float | None, int]:
    """The budget level to read (the requested one, else the highest with ``minimum`` results)."""
    if budget is not None:
        for level, count in levels:
            if math.isclose(level, budget):
                return level, count
        raise InvalidInput(f"no results at budget {budget:g}; levels with results: "
                           f"{', '.join(f'{b:g}' for b, _ in levels) or 'none yet'}")
    for level, count in levels:
        if count >= minimum:
            return level, count
    return max(levels, key=lambda lc: (lc[1], lc[0]), default=(None, 0))


def param_axes(spec: StudySpec) -> list[ParamAxis]:
    axes = []
    for name, dist in spec.space.items():
        if isinstance(dist, CategoricalDistribution):
            axes.append(ParamAxis(name, "categorical", choices=list(dist.choices)))
        else:
            axes.append(ParamAxis(name, dist.type, float(dist.low), float(dist.high), dist.log))
    return axes


def table_query(
    spec: StudySpec, *, state: str | None, bracket: int | None, rung: int | None, params: list[str],
    sort: str, limit: int, offset: int,
) -> TableQuery:
    """Validate the trials table's filters against the study's search space."""
    conditions = tuple(_param_condition(spec, text) for text in params)
    descending, key = sort.startswith("-"), sort.lstrip("-")
    if key.startswith("param:"):
        name = key.removeprefix("param:")
        dist = _dist(spec, name)
        key = f"param:{name}" if not isinstance(dist, CategoricalDistribution) else f"param_text:{name}"
    elif key not in SORTABLE:
        raise InvalidInput(f"cannot sort by {key!r}; use one of {', '.join(SORTABLE)} or param:<name>, "
                           "with '-' for descending")
    return TableQuery(state, bracket, rung, conditions, key, descending, limit, offset)


def _dist(spec: StudySpec, name: str) -> Any:
    space = spec.space
    if name not in space:
        raise InvalidInput(f"unknown parameter {name!r}; this study's parameters are {', '.join(space)}")
    return space[name]


def _param_condition(spec: StudySpec, text: str) -> ParamCondition:
    """``name:low:high`` (a bound may be empty) or ``name=value``."""
    if "=" in text:
        name, raw = text.split("=", 1)
        dist = _dist(spec, name)
        if isinstance(dist, CategoricalDistribution):
            match = [c for c in dist.choices if str(c) == raw or json.dumps(c) == raw]
            if not match:
                raise InvalidInput(f"{raw!r} is not a choice of {name} ({', '.join(map(str, dist.choices))})")
            return ParamCondition(name, equals=match[0], is_equality=True)
        return ParamCondition(name, equals=_float(raw, text), is_equality=True)
    parts = text.split(":")
    if len(parts) != 3:
        raise InvalidInput(f"parameter filter {text!r}: write name:low:high (a bound may be empty) or name=value")
    name, low, high = parts
    if isinstance(_dist(spec, name), CategoricalDistribution):
        raise InvalidInput(f"{name} is categorical: filter it with {name}=<choice>")
    return ParamCondition(name, _float(low, text) if low else None, _float(high, text) if high else None)


def _float(raw: str, text: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"parameter filter {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(f"parameter filter {text!r}: bounds must be finite")
    return value


def number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

