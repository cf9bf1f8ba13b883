"""A lease loads a study's observations only for a sampler whose proposals read them (SQLite and PostgreSQL).

A `random` (or `qmc`) proposal ignores them, yet the first lease after a restart read every rung
result of the study under the study lock: 3.0 s for 100,000 results, against 43 ms now (the
cold-lease figures in the closing note of 2026-11-29).
"""

from __future__ import annotations

import pytest

from hpo_service.orchestration.study_driver import _spec_hash
from hpo_service.sampling import Proposer
from tests.db.conftest import Service
from tests.db.test_protocol_contract import make_spec, run_segment


@pytest.mark.parametrize(("kind", "loads"), [("random", False), ("qmc", False), ("tpe", True)])
def test_a_lease_reads_observations_only_for_a_model_sampler(service: Service, kind: str, loads: bool) -> None:
    study = service.studies.create(make_spec(sampler={"kind": kind, "seed": 1}))
    for _ in range(4):  # rung-0 results of bracket 0
        run_segment(service)
    service.context.proposers.clear()  # a restarted API process

    assert service.protocol.lease("w2") is not None

    stored = service.studies.get(study.id).study.spec
    proposer = service.context.proposers.get_or_create(study.id, _spec_hash(stored), _not_built)
    assert (proposer.last_seq > 0) is loads


def _not_built() -> Proposer:
    raise AssertionError("the lease should have cached the study's proposer")
