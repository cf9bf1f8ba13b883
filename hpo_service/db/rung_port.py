"""The schedulers' read port, answered with indexed queries on `rung_results`.

Each method touches one index range (ix_rung_results_ranking), so a decision
costs the same at 100 trials as at 100,000.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Result, and_, func, or_, select
from sqlalchemy.orm import Session

from hpo_service.db.models import RungResult as RungResultRow
from hpo_service.db.models import Trial
from hpo_service.db.repositories import IN_FLIGHT
from hpo_service.scheduling.base import RungResult

_COLUMNS = (RungResultRow.trial_id, RungResultRow.bracket, RungResultRow.rung, RungResultRow.score,
            RungResultRow.budget)


class DbRungPort:
    """Reads see the caller's unflushed changes: each query flushes the session first (a no-op when
    nothing changed), so a use case writes its rows once, at commit, unless a scheduler asks."""

    def __init__(self, session: Session, study_id: int) -> None:
        self._session = session
        self._study_id = study_id

    def _execute(self, query: Any) -> Result[Any]:
        self._session.flush()
        return self._session.execute(query)

    def _at(self, bracket: int, rung: int) -> list[object]:
        return [
            RungResultRow.study_id == self._study_id,
            RungResultRow.bracket == bracket,
            RungResultRow.rung == rung,
        ]

    def count(self, bracket: int, rung: int) -> int:
        query = select(func.count()).select_from(RungResultRow).where(*self._at(bracket, rung))
        return int(self._execute(query).scalar_one())

    def best_unpromoted(self, bracket: int, rung: int) -> RungResult | None:
        query = (
            select(*_COLUMNS)
            .where(*self._at(bracket, rung), RungResultRow.promoted.is_(False))
            .order_by(RungResultRow.score, RungResultRow.trial_id)
            .limit(1)
        )
        row = self._execute(query).first()
        return RungResult(*row) if row else None

    def count_better(self, bracket: int, rung: int, result: RungResult) -> int:
        ahead = or_(
            RungResultRow.score < result.score,
            and_(RungResultRow.score == result.score, RungResultRow.trial_id < result.trial_id),
        )
        query = select(func.count()).select_from(RungResultRow).where(*self._at(bracket, rung), ahead)
        return int(self._execute(query).scalar_one())

    def promoted_ids(self, bracket: int, rung: int) -> set[int]:
        query = select(RungResultRow.trial_id).where(*self._at(bracket, rung), RungResultRow.promoted.is_(True))
        return set(self._execute(query).scalars())

    def in_flight(self, bracket_lo: int, bracket_hi: int) -> int:
        query = select(func.count()).select_from(Trial).where(
            Trial.study_id == self._study_id, Trial.state.in_(IN_FLIGHT),
            Trial.bracket >= bracket_lo, Trial.bracket < bracket_hi,
        )
        return int(self._execute(query).scalar_one())

    def newest_trial_id(self) -> int | None:
        # Trials of a study are created under its row lock, so their ids grow in creation order.
        query = select(func.max(Trial.id)).where(Trial.study_id == self._study_id)
        return self._execute(query).scalar_one()

    def best_at_budget(self, bracket_lo: int, bracket_hi: int, budget: float, k: int) -> list[RungResult]:
        query = (
            select(*_COLUMNS)
            .where(RungResultRow.study_id == self._study_id, RungResultRow.budget == budget,
                   RungResultRow.bracket >= bracket_lo, RungResultRow.bracket < bracket_hi)
            .order_by(RungResultRow.score, RungResultRow.trial_id)
            .limit(k)
        )
        return [RungResult(*row) for row in self._execute(query)]

    def ranked(self, bracket: int, rung: int) -> list[RungResult]:
        query = select(*_COLUMNS).where(*self._at(bracket, rung)).order_by(
            RungResultRow.score, RungResultRow.trial_id
        )
        return [RungResult(*row) for row in self._execute(query)]
