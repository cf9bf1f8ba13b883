"""The dashboard's kept per-rung totals (orchestration/dashboard_rungs.py) against a full count.

The ledger sums the trials below a watermark once and re-reads only the rest; whatever happens
to a study -- trials created, promoted, stopped, completed, a raised max_budget bringing finished
trials back, a final trial reopened some other way -- its totals must equal a GROUP BY over
everything.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from hpo_service.db import dashboard_queries as dq
from hpo_service.db.models import Trial
from hpo_service.domain.states import StudyStatus
from hpo_service.orchestration.dashboard_history import LATE_COMMIT_S
from hpo_service.orchestration.dashboard_rungs import RungLedger, RungTotals, ledger_terms
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


def full_count(service: Service, study_id: int) -> tuple[Counter[Any], Counter[Any]]:
    with service.context.transaction() as session:
        return (Counter(dq.trial_counts_by_rung(session, study_id)),
                Counter(dq.rung_totals(session, study_id)))


def read(service: Service, ledger: RungLedger, study_id: int) -> RungTotals:
    signature, keep = ledger_terms(service.studies.get(study_id).study)  # as DashboardService does
    cutoff = service.clock() - timedelta(seconds=LATE_COMMIT_S)
    with service.context.transaction() as session:
        return ledger.read(session, study_id, signature, cutoff, keep=keep)


def assert_same(service: Service, ledger: RungLedger, study_id: int) -> RungTotals:
    totals = read(service, ledger, study_id)
    counts, results = full_count(service, study_id)
    assert Counter((*key, n) for key, n in totals.counts.items()) == counts
    assert Counter((*key, *cell) for key, cell in totals.results.items()) == results
    return totals


def test_kept_totals_equal_a_full_count_as_a_study_runs_is_raised_and_reopened(service: Service) -> None:
    study = service.studies.create(make_spec(scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 9,
                                                         "eta": 3, "iterations": 3}))
    ledger = RungLedger()
    watermarks = []
    while service.studies.get(study.id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        service.clock.advance(2)  # results age past LATE_COMMIT_S: the watermark can move
        assert_same(service, ledger, study.id)
        watermarks.append(ledger.watermark)
    assert watermarks == sorted(watermarks) and watermarks[-1] > 0, "the incremental path never ran"

    # Raised: finished trials come back (and others turn from completed to stopped later), so
    # nothing is kept any more.
    service.studies.extend(study.id, 27)
    assert_same(service, ledger, study.id)
    while service.studies.get(study.id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        service.clock.advance(2)
        assert_same(service, ledger, study.id)
        assert ledger.watermark == 0

    # In a study never raised, a final trial below the watermark back in play by any other path
    # is noticed too.
    study = service.studies.create(make_spec(name="never-raised", scheduler={
        "kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3, "iterations": 2}))
    ledger = RungLedger()
    while service.studies.get(study.id).study.status == StudyStatus.RUNNING.value:
        run_segment(service)
        service.clock.advance(2)
    service.clock.advance(10)
    assert_same(service, ledger, study.id)
    assert ledger.watermark > 0
    with service.context.transaction() as session:
        first = session.query(Trial).filter(Trial.study_id == study.id, Trial.id < ledger.watermark,
                                            Trial.state == "stopped").order_by(Trial.id).first()
        assert first is not None
        session.execute(update(Trial).where(Trial.id == first.id).values(state="paused", rung=first.rung + 1))
    service.clock.advance(10)
    assert_same(service, ledger, study.id)
    assert ledger.watermark <= first.id


def test_levels_and_summary_match_the_queries_they_replace(service: Service) -> None:
    study = service.studies.create(make_spec())
    for _ in range(12):
        run_segment(service)
    service.clock.advance(10)
    totals = assert_same(service, RungLedger(), study.id)
    per_budget: Counter[float] = Counter()
    for (_bracket, _rung, budget), (n, _promoted, _best) in totals.results.items():
        per_budget[budget] += n
    assert totals.levels() == sorted(per_budget.items(), reverse=True)
    assert totals.levels()[0][0] == max(per_budget)
    cells = {(b, r): (u, n, p, best) for b, r, u, n, p, best in totals.summary()}
    assert sum(n for _u, n, _p, _b in cells.values()) == sum(per_budget.values())
