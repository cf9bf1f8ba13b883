"""The study page's trials table: filters and sorting in SQL, for any page of any study size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from hpo_service.db.models import Trial


@dataclass(frozen=True)
class ParamCondition:
    """``low <= params[name] <= high`` (either bound optional), or ``params[name] == value``."""

    name: str
    low: float | None = None
    high: float | None = None
    equals: Any = None
    is_equality: bool = False


@dataclass(frozen=True)
class TableQuery:
    state: str | None = None
    bracket: int | None = None
    rung: int | None = None
    params: tuple[ParamCondition, ...] = ()
    sort: str = "number"  # a column of SORTABLE, "param:<numeric param>" or "param_text:<categorical>"
    descending: bool = False
    limit: int = 50
    offset: int = 0


SORTABLE = {"number": Trial.number, "value": Trial.value, "state": Trial.state, "bracket": Trial.bracket,
            "rung": Trial.rung, "budget_done": Trial.budget_done, "attempt": Trial.attempt,
            "updated_at": Trial.updated_at}


def _param_condition(condition: ParamCondition) -> ColumnElement[bool]:
    field: Any = Trial.params[condition.name]  # a JSON element: as_float() etc. per dialect
    if condition.is_equality:
        value = condition.equals
        if value is None:
            condition_sql: ColumnElement[bool] = field.as_string().is_(None)
        elif isinstance(value, bool):
            condition_sql = field.as_boolean() == value
        elif isinstance(value, (int, float)):
            condition_sql = field.as_float() == float(value)
        else:
            condition_sql = field.as_string() == str(value)
        return condition_sql
    bounds = []
    if condition.low is not None:
        bounds.append(field.as_float() >= condition.low)
    if condition.high is not None:
        bounds.append(field.as_float() <= condition.high)
    return and_(*bounds) if bounds else field.as_string().is_not(None)


def trial_page(session: Session, study_id: int, query: TableQuery) -> tuple[list[Trial], int]:
    """One page of a study's trials, filtered and sorted in SQL; nulls sort last either way."""
    conditions: list[ColumnElement[bool]] = [Trial.study_id == study_id]
    if query.state:
        conditions.append(Trial.state == query.state)
    if query.bracket is not None:
        conditions.append(Trial.bracket == query.bracket)
    if query.rung is not None:
        conditions.append(Trial.rung == query.rung)
    conditions.extend(_param_condition(c) for c in query.params)
    where = and_(*conditions)
    total = session.execute(select(func.count()).select_from(Trial).where(where)).scalar_one()
    if query.sort.startswith("param:"):
        column: Any = Trial.params[query.sort.removeprefix("param:")].as_float()
    elif query.sort.startswith("param_text:"):
        column = Trial.params[query.sort.removeprefix("param_text:")].as_string()
    else:
        column = SORTABLE[query.sort]
    ordering = (column.desc() if query.descending else column.asc()).nulls_last()
    tiebreak = Trial.number.desc() if query.descending else Trial.number.asc()
    rows = session.execute(
        select(Trial).where(where).order_by(ordering, tiebreak).limit(query.limit).offset(query.offset)
    )
    return list(rows.scalars()), int(total)
