"""Pause, resume, cancel and extend repeated: the repeat succeeds and changes nothing (SQLite and PostgreSQL).

The SDK retries a call whose response was lost (a timeout, a reset connection). When the first
try had been carried out, the retry finds the study already as asked; answering it with an error
made a CI job fail for a change that was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hpo_service.errors import Conflict, InvalidInput
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


def stored(service: Service, study_id: int) -> tuple[Any, ...]:
    """Everything a repeated control call must leave as it was."""
    summary = service.studies.get(study_id)
    study = summary.study
    decisions = [(d.kind, d.trial_id) for d in service.studies.decisions(study_id)]
    return study.status, study.version, study.spec, study.scheduler_state, summary.trial_counts, decisions


CALLS: dict[str, Callable[[Service, int], Any]] = {
    "pause": lambda service, study_id: service.studies.pause(study_id),
    "resume": lambda service, study_id: service.studies.resume(study_id),
    "cancel": lambda service, study_id: service.studies.cancel(study_id),
    "extend to 27": lambda service, study_id: service.studies.extend(study_id, 27),
}


@pytest.mark.parametrize(("setup", "repeated", "status"), [
    (["pause"], "pause", "paused"),
    (["pause", "resume"], "resume", "running"),
    ([], "resume", "running"),  # resuming a running study: it runs
    (["cancel"], "cancel", "cancelled"),
    (["pause", "cancel"], "cancel", "cancelled"),
    (["extend to 27"], "extend to 27", "running"),
])
def test_a_repeated_control_call_succeeds_and_changes_nothing(
    service: Service, setup: list[str], repeated: str, status: str
) -> None:
    study = service.studies.create(make_spec())
    run_segment(service)  # a trial paused at rung 0, with its decision logged
    grant = service.protocol.lease("w2")  # and one running
    assert grant is not None
    for call in setup:
        CALLS[call](service, study.id)
    before = stored(service, study.id)

    answer = CALLS[repeated](service, study.id)

    assert answer.status == status
    assert stored(service, study.id) == before


@pytest.mark.parametrize(("setup", "call", "error", "message"), [
    (["cancel"], "pause", Conflict, "cannot pause study .*: it is cancelled"),
    (["cancel"], "resume", Conflict, "cannot resume study .*: it is cancelled"),
    (["cancel"], "extend to 27", Conflict, "cannot extend study .*: it is cancelled"),
])
def test_a_call_that_asks_for_another_end_is_still_refused(
    service: Service, setup: list[str], call: str, error: type[Exception], message: str
) -> None:
    study = service.studies.create(make_spec())
    for name in setup:
        CALLS[name](service, study.id)
    before = stored(service, study.id)
    with pytest.raises(error, match=message):
        CALLS[call](service, study.id)
    assert stored(service, study.id) == before


def test_extending_below_the_current_max_budget_is_still_refused(service: Service) -> None:
    study = service.studies.create(make_spec())
    service.studies.extend(study.id, 27)
    with pytest.raises(InvalidInput, match="must grow: it is 27, you asked for 9"):
        service.studies.extend(study.id, 9)
