"""``any_of`` (hpo_service/db/any_of.py): the same rows as ``IN`` on each backend, and on
PostgreSQL one statement text whatever the list's length (what keeps psycopg's caches from churning)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from hpo_service.db.any_of import any_of
from hpo_service.db.models import Trial
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec


def _study_with_trials(service: Service, count: int) -> list[int]:
    """Ids of ``count`` running trials, leased by workers w0, w1, ..."""
    service.studies.create(make_spec())
    grants = [service.protocol.lease(f"w{i}") for i in range(count)]
    assert all(grant is not None for grant in grants)
    return [grant.trial.id for grant in grants if grant is not None]


@pytest.mark.parametrize(
    ("pick", "missing"),
    [
        pytest.param([], [], id="empty list matches nothing"),
        pytest.param([0], [], id="one"),
        pytest.param([0, 2], [], id="several"),
        pytest.param([1, 1, 1], [], id="duplicates"),
        pytest.param([0], [10**12], id="with an id that does not exist"),
        pytest.param([], [10**12, 10**12 + 1], id="only ids that do not exist"),
    ],
)
def test_any_of_selects_what_in_selects(service: Service, pick: list[int], missing: list[int]) -> None:
    trial_ids = _study_with_trials(service, 3)
    wanted = [trial_ids[i] for i in pick] + missing
    with service.context.transaction() as session:
        got = session.execute(select(Trial.id).where(any_of(session, Trial.id, wanted)).order_by(Trial.id)).scalars()
        expected = session.execute(select(Trial.id).where(Trial.id.in_(wanted)).order_by(Trial.id)).scalars()
        assert list(got) == list(expected) == sorted({trial_ids[i] for i in pick})


def test_any_of_works_on_text_columns(service: Service) -> None:
    trial_ids = _study_with_trials(service, 2)
    with service.context.transaction() as session:
        got = session.execute(select(Trial.id).where(any_of(session, Trial.lease_owner, ["w1", "nobody"]))).scalars()
        assert list(got) == [trial_ids[1]]


def test_statement_text_does_not_depend_on_the_list_length(service: Service) -> None:
    trial_ids = _study_with_trials(service, 3)
    texts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not the transaction's BEGIN
            texts.append(statement)

    engine = service.context.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        with service.context.transaction() as session:
            for length in (1, 2, 3):
                session.execute(select(Trial.id).where(any_of(session, Trial.id, trial_ids[:length]))).all()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    if engine.dialect.name == "postgresql":
        assert len(set(texts)) == 1, texts
        assert "ANY" in texts[0].upper()
    else:  # SQLite: IN, one text per length (its driver's statement cache is small and bounded)
        assert len(set(texts)) == 3, texts
