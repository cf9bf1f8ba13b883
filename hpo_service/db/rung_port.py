"""The schedulers' read port, answered with indexed queries on `rung_results`.

Each method touches one index range (ix_rung_results_ranking), so a decision
costs the same at 100 trials as at 100,000.
"""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from hpo_service.db.models import RungResult as RungResultRow
from hpo_service.scheduling.base import RungResult

_COLUMNS = (RungResultRow.trial_id, RungResultRow.bracket, RungResultRow.rung, RungResultRow.score)


class DbRungPort:
    def __init__(self, session: Session, study_id: int) -> None:
        self._session = session
        self._study_id = study_id

    def _at(self, bracket: int, rung: int) -> list[object]:
        return [
            RungResultRow.study_id == self._study_id,
            RungResultRow.bracket == bracket,
            RungResultRow.rung == rung,
        ]

    def count(self, bracket: int, rung: int) -> int:
        query = select(func.count()).select_from(RungResultRow).where(*self._at(bracket, rung))
        return int(self._session.execute(query).scalar_one())

    def best_unpromoted(self, bracket: int, rung: int) -> RungResult | None:
        query = (
            select(*_COLUMNS)
            .where(*self._at(bracket, rung), RungResultRow.promoted.is_(False))
            .order_by(RungResultRow.score, RungResultRow.trial_id)
            .limit(1)
        )
        row = self._session.execute(query).first()
        return RungResult(*row) if row else None

    def count_better(self, bracket: int, rung: int, result: RungResult) -> int:
        ahead = or_(
            RungResultRow.score < result.score,
            and_(RungResultRow.score == result.score, RungResultRow.trial_id < result.trial_id),
        )
        query = select(func.count()).select_from(RungResultRow).where(*self._at(bracket, rung), ahead)
        return int(self._session.execute(query).scalar_one())

    def ranked(self, bracket: int, rung: int) -> list[RungResult]:
        query = select(*_COLUMNS).where(*self._at(bracket, rung)).order_by(
            RungResultRow.score, RungResultRow.trial_id
        )
        return [RungResult(*row) for row in self._session.execute(query)]
