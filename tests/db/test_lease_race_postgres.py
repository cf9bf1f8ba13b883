"""Races between use cases on PostgreSQL, where row locks (not one database lock) keep them apart.

1. A call under a lease that waits on a lock while the lease is revoked must see the revocation.
   `complete` and `fail` read the trial to find its study, then wait for the study's lock;
   `heartbeat` waits for the trial's row lock. If a lease expiry (which holds both locks)
   commits meanwhile, the call must act on the row as it is once the lock is granted -- the
   token is gone, so StaleLease -- not on what it read before waiting. (SQLAlchemy keeps the
   attributes of an object it already loaded unless told to refresh them; a locking read
   that does not refresh hands back the pre-wait view and the fencing check passes.)
2. ``max_concurrent`` holds when two leases claim pending trials at the same moment.
3. A lease reads its study unlocked, then locks it to decide new work in the same transaction:
   the locked read must replace the earlier one (``populate_existing``), or the second of two
   leases decides from a stale scheduler snapshot.
4. Two creates of one study (same name, same spec) at once: one creates, the other attaches.
5. A cancel that read the pending trials before a worker claimed one leaves that trial running
   (told to stop) rather than revoking a lease it never saw.
6. A pause that commits after a lease read the study, but before it claimed, hands out nothing.

PostgreSQL only: SQLite takes the database's write lock at BEGIN (IMMEDIATE), so nothing
can commit between a transaction's first read and its writes there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from hpo_service.domain.states import TrialState
from hpo_service.errors import StaleLease
from tests.db.conftest import FakeClock, Service
from tests.db.test_protocol_contract import make_spec, run_segment

CALLS: dict[str, Callable[[Service, int, str], Any]] = {
    "complete": lambda svc, trial_id, token: svc.protocol.complete(trial_id, token, {"loss": 0.5}, None),
    "fail": lambda svc, trial_id, token: svc.protocol.fail(trial_id, token, "boom", retryable=True),
    "heartbeat": lambda svc, trial_id, token: svc.protocol.heartbeat(trial_id, token),
}


@pytest.fixture
def pg_service(postgres_url: str) -> Any:
    from hpo_service.db.migrate import upgrade

    upgrade(postgres_url)
    svc = Service(postgres_url, FakeClock())
    yield svc
    svc.context.engine.dispose()


def _wait_until_blocked_on_a_lock(svc: Service, timeout_s: float = 20.0) -> None:
    """Until some other session of this database waits for a lock (the call under test)."""
    deadline = time.monotonic() + timeout_s
    with svc.context.engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )).scalar_one()
            probe.commit()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the call never waited for the lock the expiry holds")


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_call_that_waited_out_a_lease_expiry_is_refused(pg_service: Service, call: str) -> None:
    svc = pg_service
    study = svc.studies.create(make_spec())
    grant = svc.protocol.lease("w1")
    assert grant is not None
    trial_id, token = grant.trial.id, grant.trial.lease_token
    svc.protocol.report(trial_id, token, [(1.0, {"loss": 0.5})])
    svc.clock.advance(31)

    outcome: list[BaseException | object] = []
    worker = threading.Thread(target=lambda: outcome.append(_capture(lambda: CALLS[call](svc, trial_id, token))))
    with svc.context.transaction() as session:  # the expiry sweep, holding the study and trial locks
        assert svc.protocol._expire_one(session, study.id, trial_id, svc.clock()) == 1
        worker.start()
        _wait_until_blocked_on_a_lock(svc)
    worker.join(timeout=30)
    assert not worker.is_alive()

    assert len(outcome) == 1 and isinstance(outcome[0], StaleLease), outcome
    detail = svc.studies.trial(trial_id)
    assert detail.trial.state == TrialState.PENDING.value and detail.trial.attempt == 2
    assert detail.trial.lease_token is None and detail.trial.lease_expires_at is None
    assert detail.rung_results == []
    assert [d.kind for d in detail.decisions] == ["requeue"]
    regrant = svc.protocol.lease("w2")
    assert regrant is not None and regrant.trial.id == trial_id and regrant.trial.attempt == 2


def _at_once(*calls: Callable[[], Any]) -> list[object]:
    """Run the calls on threads of their own, together; their results or exceptions, in call order."""
    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        outcomes[index] = _capture(calls[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a call is still waiting after 30 s"
    return outcomes


def _capture(call: Callable[[], Any]) -> BaseException | object:
    try:
        return call()
    except Exception as error:  # the outcome is asserted by the test
        return error


def test_max_concurrent_holds_when_two_workers_claim_promoted_trials_at_once(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two leases that both counted the running trials before either claimed must not both claim.

    Pending trials (promoted here) are claimed without deciding anything new; with
    ``max_concurrent`` set, the count and the claim must still be one step per study.
    """
    from hpo_service.db import repositories as repo

    svc = pg_service
    study = svc.studies.create(make_spec(limits={"max_concurrent": 2}))
    for _ in range(9):
        run_segment(svc)  # bracket s=2, rung 0 settles: three trials promoted, pending
    assert svc.studies.get(study.id).trial_counts.get("pending") == 3
    assert svc.protocol.lease("c") is not None  # one running: one more fits

    both_counted = threading.Barrier(2, timeout=3.0)
    claim = repo.claim_pending

    def claim_after_both_counted(session: Any, study_id: int) -> Any:
        try:
            both_counted.wait()  # with the study serialised, the other lease waits for our lock: time out
        except threading.BrokenBarrierError:
            pass
        return claim(session, study_id)

    monkeypatch.setattr(repo, "claim_pending", claim_after_both_counted)
    grants = _at_once(lambda: svc.protocol.lease("d"), lambda: svc.protocol.lease("e"))
    assert sorted(type(g).__name__ for g in grants) == ["LeaseGrant", "NoneType"], grants
    assert svc.studies.get(study.id).trial_counts.get("running") == 2


def test_two_leases_deciding_new_work_at_once_each_see_the_others_decision(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease reads its study unlocked (for a pending trial), then locks it to decide new work.

    Both leases read the study before either locked it; the second to get the lock must decide
    from the snapshot the first committed (its trial count, its brackets), not from its own
    earlier read: two new trials with distinct numbers, each counted once by the scheduler.
    """
    from hpo_service.db import repositories as repo

    svc = pg_service
    study = svc.studies.create(make_spec())
    both_read = threading.Barrier(2, timeout=10.0)
    claim = repo.claim_pending

    def claim_after_both_read(session: Any, study_id: int) -> Any:
        both_read.wait()  # neither holds the study lock yet: both pass
        return claim(session, study_id)

    monkeypatch.setattr(repo, "claim_pending", claim_after_both_read)
    grants = _at_once(lambda: svc.protocol.lease("a"), lambda: svc.protocol.lease("b"))
    assert sorted(type(g).__name__ for g in grants) == ["LeaseGrant", "LeaseGrant"], grants
    numbers = sorted(g.trial.number for g in grants)  # type: ignore[attr-defined]
    assert numbers == [0, 1]
    summary = svc.studies.get(study.id)
    assert summary.study.trials_created == 2
    assert summary.study.scheduler_state["trials_created"] == 2


def test_two_creates_of_the_same_study_at_once_attach_instead_of_conflicting(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CI jobs submit the same spec at the same moment: one creates the study, the other
    attaches to it (as it would a moment later), rather than getting 409 from the unique name."""
    from hpo_service.db import repositories as repo

    svc = pg_service
    both_looked = threading.Barrier(2, timeout=10.0)
    lookup = repo.get_study_by_name
    calls = [0]

    def lookup_after_both_looked(session: Any, project_id: int, name: str) -> Any:
        found = lookup(session, project_id, name)
        calls[0] += 1
        if calls[0] <= 2:  # the first look of each: neither has inserted yet
            both_looked.wait()
        return found

    monkeypatch.setattr(repo, "get_study_by_name", lookup_after_both_looked)
    outcomes = _at_once(lambda: svc.studies.create_or_attach(make_spec()),
                        lambda: svc.studies.create_or_attach(make_spec()))
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert sorted(created for _, created in outcomes) == [False, True]  # type: ignore[misc]
    assert len({study.id for study, _ in outcomes}) == 1  # type: ignore[misc]


def test_a_trial_claimed_while_the_study_is_cancelled_is_told_to_stop(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel reads the study's pending trials, a worker claims one of them, then cancel writes.

    The claim committed first, so the trial is running under a lease: cancel must leave it
    running (its holder is told to stop at its next heartbeat or report, like every running
    trial of a cancelled study), not overwrite it as stopped and revoke a lease it never saw
    -- that holder would get 409 for a trial it was entitled to. Cancel locks the trials it
    stops, so the claim either happens before (and cancel skips the trial) or not at all.
    """
    from hpo_service.db import repositories as repo

    svc = pg_service
    study = svc.studies.create(make_spec())
    for _ in range(9):
        run_segment(svc)  # bracket s=2, rung 0 settles: three trials promoted, pending
    assert svc.studies.get(study.id).trial_counts.get("pending") == 3

    read = repo.trials_in_state
    claimed: list[object] = []

    def claim_between_read_and_write(session: Any, study_id: int, states: Any, **kwargs: Any) -> Any:
        trials = read(session, study_id, states, **kwargs)
        worker = threading.Thread(target=lambda: claimed.append(_capture(lambda: svc.protocol.lease("w"))))
        worker.start()
        worker.join(timeout=3.0)  # done (it claimed), or waiting for a lock cancel holds
        return trials

    monkeypatch.setattr(repo, "trials_in_state", claim_between_read_and_write)
    svc.studies.cancel(study.id)
    monkeypatch.undo()
    deadline = time.monotonic() + 30
    while not claimed and time.monotonic() < deadline:
        time.sleep(0.02)

    assert len(claimed) == 1 and not isinstance(claimed[0], BaseException), claimed
    grant = claimed[0]
    if grant is not None:  # it claimed before cancel locked the trials: it is told to stop
        ack = svc.protocol.heartbeat(grant.trial.id, grant.trial.lease_token)  # type: ignore[attr-defined]
        assert ack.directive == "stop"
        assert svc.studies.trial(grant.trial.id).trial.state == TrialState.RUNNING.value  # type: ignore[attr-defined]
    counts = svc.studies.get(study.id).trial_counts
    assert counts.get("pending", 0) == 0
    assert counts.get("running", 0) == (0 if grant is None else 1)


def test_a_pending_claim_does_not_start_a_trial_of_a_study_paused_after_it_read_the_study(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease reads the study unlocked (running), then a pause commits, then the lease claims.

    Pending claims take no study lock (so they never wait), so the claim itself must see the
    pause: a study paused before the claim hands out nothing more.
    """
    from hpo_service.db import repositories as repo

    svc = pg_service
    study = svc.studies.create(make_spec())
    for _ in range(9):
        run_segment(svc)  # bracket s=2, rung 0 settles: three trials promoted, pending
    claim = repo.claim_pending

    def pause_then_claim(session: Any, study_id: int) -> Any:
        paused = _at_once(lambda: svc.studies.pause(study.id))  # another transaction, committed
        assert not isinstance(paused[0], BaseException), paused
        return claim(session, study_id)

    monkeypatch.setattr(repo, "claim_pending", pause_then_claim)
    assert svc.protocol.lease("w") is None
    monkeypatch.undo()
    counts = svc.studies.get(study.id).trial_counts
    assert counts.get("running", 0) == 0 and counts.get("pending") == 3
    svc.studies.resume(study.id)
    assert svc.protocol.lease("w") is not None  # the claim itself still works
