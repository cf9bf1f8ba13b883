"""The checkpoints each trial still needs, as `hpo checkpoints gc` reads them (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from hpo_service.errors import NotFound
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


def test_a_trial_refers_to_its_own_checkpoint_and_to_those_of_its_rung_results(service: Service) -> None:
    study = service.studies.create(make_spec())
    promoted = None
    while promoted is None:  # bracket 0 of R=9, eta=3: 9 trials at budget 1, then the best 3 go on to 3
        trial = run_segment(service)
        if trial.budget_done == 3:
            promoted = trial
    running = service.protocol.lease("w9")
    assert running is not None

    rows = service.studies.checkpoint_references(study.id)

    by_id = {row.trial_id: row for row in rows}
    assert [row.trial_id for row in rows] == sorted(by_id)
    assert by_id[promoted.id].uris == sorted([f"file:///tmp/ckpt/{promoted.id}/1", f"file:///tmp/ckpt/{promoted.id}/3"])
    assert by_id[running.trial.id].state == "running" and by_id[running.trial.id].attempt == 1
    finished_rung_0 = [row for row in rows if row.state in ("paused", "stopped")]
    assert finished_rung_0 and all(row.uris[0] == f"file:///tmp/ckpt/{row.trial_id}/1" for row in finished_rung_0)

    first = service.studies.checkpoint_references(study.id, limit=4)
    rest = service.studies.checkpoint_references(study.id, after_trial_id=first[-1].trial_id, limit=1000)
    assert first + rest == rows  # keyset pages


def test_another_projects_study_is_not_found(service: Service) -> None:
    study = service.studies.create(make_spec())
    with pytest.raises(NotFound):
        service.studies.checkpoint_references(study.id, project_id=999)
