"""hpo-service's Hyperband and ASHA as benchmark methods, behind two interchangeable backends.

``ServiceBackend`` is the real code path: the FastAPI app of ``create_app`` on a fresh SQLite
database (migrated with ``hpo db upgrade``'s code), spoken to by ``HpoClient`` through an
in-process transport. The study is created with the ``synthetic`` trainer, which never runs: the
benchmark is the worker (lease -> surrogate at ``budget_to`` -> report -> complete), and it checks
that a promoted trial is handed back the checkpoint it wrote (it resumes and pays only new epochs).

``MemoryBackend`` applies the same scheduler (``make_scheduler``), the same ``Proposer`` and the
same bookkeeping as ``orchestration/study_driver.py`` and ``protocol.py`` (claim the oldest pending
trial, else ask the scheduler; record the rung result, apply the actions; observations numbered
in the order they were recorded; proposals per budget level; raising max_budget as
``StudyDriver.extend`` does) in memory. Given a seed it makes
exactly the decisions the service makes -- tests/bench/test_bench_smoke.py compares the two
evaluation by evaluation -- at a fraction of the cost (no HTTP, no SQL), which is what makes
34 tasks x 5 seeds fit in an hour on two cores.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.lcbench import MAX_EPOCHS
from bench.methods.budget import Ledger, TaskObjective, epochs_of

OBJECTIVE_METRIC = "accuracy"  # a metric the synthetic trainer declares; the values are LCBench's
MIN_BUDGET, ETA = 1.0, 3


def study_spec(name: str, scheduler: str, sampler: str, seed: int, space: dict[str, Any],
               total_budget: float, max_trials: int | None = None, max_budget: float = float(MAX_EPOCHS),
               iterations: int = 1000) -> dict[str, Any]:
    """The study a user would submit: budget = epochs 1..52, eta 3, the LCBench space inline.

    ``iterations`` is large by default so that ``limits.total_budget`` (in the service's fractional
    budget units) is what ends a Hyperband study, as it ends an ASHA one. Iterative deepening
    (bench/methods/deepening.py) starts lower (``max_budget``) and sets its own limits.
    """
    spec: dict[str, Any] = {
        "name": name,
        "objective": {"metric": OBJECTIVE_METRIC, "direction": "maximize"},
        "search_space": space,
        "scheduler": {"kind": scheduler, "min_budget": MIN_BUDGET, "max_budget": float(max_budget), "eta": ETA},
        "sampler": {"kind": sampler, "seed": seed},
        "trainer": {"name": "synthetic", "params": {}},
        "limits": {"total_budget": total_budget},
        "retry": {"lease_seconds": 86_400.0, "max_attempts": 3},  # simulated runs never expire
    }
    if scheduler == "hyperband":
        spec["scheduler"]["iterations"] = iterations
    if max_trials is not None:
        spec["limits"]["max_trials"] = max_trials
    return spec


@dataclass(frozen=True)
class Lease:
    trial_id: int
    number: int
    params: dict[str, Any]
    budget_from: float
    budget_to: float
    token: str
    checkpoint_in: str | None


class Backend(Protocol):
    def lease(self) -> Lease | None:
        """Work for a worker now, or None (nothing to hand out at the moment)."""
        ...

    def complete(self, lease: Lease, value: float) -> None: ...

    def configurations(self) -> int: ...

    def extend(self, max_budget: float) -> None:
        """Raise the study's max_budget (iterative deepening), running or finished."""
        ...


def checkpoint_uri(lease: Lease) -> str:
    return f"sim://trial/{lease.trial_id}/epoch/{epochs_of(lease.budget_to)}"


# --- the real service -------------------------------------------------------------------------------


class _TestClientTransport(httpx.BaseTransport):
    """Lets ``HpoClient`` (a plain httpx client) call the app through Starlette's TestClient."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._client.request(request.method, str(request.url), headers=dict(request.headers),
                                        content=request.read())
        return httpx.Response(response.status_code, headers=response.headers, content=response.content,
                              request=request)


class ServiceBackend:
    """One study on its own in-process service and SQLite file; a context manager."""

    def __init__(self, spec: dict[str, Any], workdir: Path | None = None, worker_id: str = "bench-worker") -> None:
        self._spec, self._workdir, self._worker_id = spec, workdir, worker_id
        self._stack = contextlib.ExitStack()
        self.study_id = -1

    def __enter__(self) -> ServiceBackend:
        from fastapi.testclient import TestClient

        from hpo_service.api.app import create_app
        from hpo_service.api.startup import bootstrap_token
        from hpo_service.client import HpoClient
        from hpo_service.db.migrate import upgrade
        from hpo_service.settings import Settings

        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(dir=self._workdir,
                                                                            prefix="hpo-bench-")))
        url = f"sqlite:///{folder / 'hpo.db'}"
        upgrade(url)
        settings = Settings(database_url=url, checkpoint_uri=f"file://{folder / 'checkpoints'}")
        token = bootstrap_token(settings, "bench admin")
        assert token is not None
        app_client = self._stack.enter_context(TestClient(create_app(settings)))
        self._client = self._stack.enter_context(
            HpoClient("http://testserver", token=token.secret, retries=0,
                      transport=_TestClientTransport(app_client)))
        self.study_id = int(self._client.create_study(self._spec)["id"])
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def lease(self) -> Lease | None:
        grant = self._client.lease(self._worker_id, wait_s=0.0, studies=[self.study_id])
        if grant is None:
            return None
        return Lease(int(grant["trial_id"]), int(grant["number"]), dict(grant["params"]), float(grant["budget_from"]),
                     float(grant["budget_to"]), str(grant["lease_token"]), grant["checkpoint_in"])

    def complete(self, lease: Lease, value: float) -> None:
        step = {"step": lease.budget_to, "metrics": {OBJECTIVE_METRIC: value}}
        self._client.report(lease.trial_id, lease.token, [step])
        self._client.complete(lease.trial_id, lease.token, {OBJECTIVE_METRIC: value}, checkpoint_uri(lease))

    def configurations(self) -> int:
        return int(self._client.get_study(self.study_id)["trials_created"])

    def extend(self, max_budget: float) -> None:
        self._client.extend_study(self.study_id, max_budget)  # PATCH /api/v1/studies/{id}

    def status(self) -> str:
        return str(self._client.get_study(self.study_id)["status"])


# --- the same decisions in memory -----------------------------------------------------------------------


@dataclass
class _Trial:
    trial_id: int
    number: int
    params: dict[str, Any]
    bracket: int
    rung: int
    budget_done: float = 0.0
    budget_target: float = 0.0
    state: str = "pending"
    checkpoint: str | None = None


@dataclass
class MemoryBackend:
    """StudyDriver + TrialProtocol's decisions without HTTP or SQL (see the module docstring)."""

    spec: dict[str, Any]
    trials: dict[int, _Trial] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from hpo_service.domain.spec import StudySpec
        from hpo_service.sampling.proposer import Proposer
        from hpo_service.scheduling.factory import make_scheduler
        from hpo_service.scheduling.memory_port import InMemoryRungPort

        self._spec = StudySpec.model_validate(self.spec)
        self._scheduler = make_scheduler(self._spec.scheduler, self._spec.limits)
        self._state = _json_copy(self._scheduler.initial_state())
        self._port = InMemoryRungPort()
        seed = self._spec.sampler.seed if self._spec.sampler.seed is not None else 1
        self._proposer = Proposer(self._spec.space, self._spec.sampler, seed)
        self._low = self._scheduler.rung_budget(0, 0)
        self._observations: list[Any] = []
        self._pending: list[int] = []  # trial ids; the service claims the oldest (lowest id) first
        self._tokens = 0

    def lease(self) -> Lease | None:
        trial = self._claim_pending() or self._new_work()
        if trial is None:
            return None
        trial.state = "running"
        self._tokens += 1
        checkpoint = trial.checkpoint if trial.budget_done > 0 else None
        return Lease(trial.trial_id, trial.number, dict(trial.params), trial.budget_done, trial.budget_target,
                     str(self._tokens), checkpoint)

    def complete(self, lease: Lease, value: float) -> None:
        from hpo_service.sampling.observations import Observation
        from hpo_service.scheduling.base import RungResult

        trial = self.trials[lease.trial_id]
        trial.budget_done, trial.checkpoint, trial.state = trial.budget_target, checkpoint_uri(lease), "paused"
        score = -value  # maximised: the service ranks -value
        result = RungResult(trial.trial_id, trial.bracket, trial.rung, score)
        self._port.record(result)
        seq = len(self._observations) + 1
        self._observations.append(Observation(params=dict(trial.params), rung=self._level(trial.budget_target),
                                              budget=trial.budget_target, score=score, seq=seq))
        state, actions = self._scheduler.on_result(self._state, self._port, result)
        self._state = _json_copy(state)
        self._apply(actions)

    def configurations(self) -> int:
        return len(self.trials)

    def extend(self, max_budget: float) -> None:
        """StudyDriver.extend: a scheduler of the new spec extends the snapshot; its actions are applied.

        The service's ProposerCache keys proposers by the spec's hash, so the raise gives the study a new
        proposer that reads every observation again; so does this (a proposal is a pure function of the
        seed, the trial number and the observations in order, so it changes nothing but is what happens).
        """
        from hpo_service.domain.spec import StudySpec
        from hpo_service.sampling.proposer import Proposer
        from hpo_service.scheduling.factory import make_scheduler

        old_max = self._spec.scheduler.max_budget
        raw = self.spec | {"scheduler": self.spec["scheduler"] | {"max_budget": float(max_budget)}}
        new_spec = StudySpec.model_validate(raw)
        scheduler = make_scheduler(new_spec.scheduler, new_spec.limits)
        state, actions = scheduler.extend(self._state, self._port, old_max)
        self.spec, self._spec, self._scheduler, self._state = raw, new_spec, scheduler, _json_copy(state)
        seed = new_spec.sampler.seed if new_spec.sampler.seed is not None else 1
        self._proposer = Proposer(new_spec.space, new_spec.sampler, seed)
        self._apply(actions)

    # --- what the service's use cases do ---------------------------------------------------------

    def _claim_pending(self) -> _Trial | None:
        if not self._pending:
            return None
        self._pending.sort()
        return self.trials[self._pending.pop(0)]

    def _new_work(self) -> _Trial | None:
        from hpo_service.scheduling.base import NewTrial, Promote

        state, action = self._scheduler.next_work(self._state, self._port)
        self._state = _json_copy(state)
        if isinstance(action, NewTrial):
            number = len(self.trials)
            # seq = position + 1, so the ones not seen yet start at index last_seq (-1 before any).
            self._proposer.observe(self._observations[max(0, self._proposer.last_seq):])
            params = self._proposer.propose(number)
            trial = _Trial(number + 1, number, params, action.bracket, action.rung, budget_target=action.budget)
            self.trials[trial.trial_id] = trial
            self._port.created(trial.trial_id)
            return trial
        if isinstance(action, Promote):
            self._promote(action)
            self._pending.remove(action.trial_id)
            return self.trials[action.trial_id]
        return None

    def _apply(self, actions: list[Any]) -> None:
        from hpo_service.scheduling.base import Finish, Promote, Stop

        for action in actions:
            if isinstance(action, Promote):
                self._promote(action)
            elif isinstance(action, Stop):
                self.trials[action.trial_id].state = "stopped"
            elif isinstance(action, Finish):
                self.trials[action.trial_id].state = "completed"

    def _promote(self, action: Any) -> None:
        trial = self.trials[action.trial_id]
        self._port.mark_promoted(trial.trial_id, trial.rung)
        trial.state, trial.rung, trial.budget_target = "pending", action.to_rung, action.budget
        self._pending.append(trial.trial_id)

    def _level(self, budget: float) -> int:
        # StudyDriver._level: the budget level shared by all brackets.
        return max(0, round(math.log(max(budget, self._low) / self._low, ETA)))


def _json_copy(state: dict[str, Any]) -> dict[str, Any]:
    """The service stores the snapshot as JSON; a round trip keeps the two paths identical."""
    return json.loads(json.dumps(state))


# --- one sequential run (one worker) -------------------------------------------------------------------


def run_sequential(backend: Backend, objective: TaskObjective, ledger: Ledger,
                   trace: list[tuple[int, float, float, float]] | None = None) -> bool:
    """Lease, train on the surrogate, complete -- until the study has no work or the budget is spent.

    With one worker nothing is ever in flight when ``lease`` returns None, so None means the study
    is finished: then it returns True; False when the run stopped because the next segment did not
    fit the budget. ``trace`` (if given) receives ``(trial_id, budget_from, budget_to, accuracy)``
    per evaluation: what the backend-equivalence test compares.
    """
    while True:
        lease = backend.lease()
        if lease is None:
            return True
        start, end = epochs_of(lease.budget_from), epochs_of(lease.budget_to)
        if not ledger.fits(end - start):
            return False
        if start > 0 and lease.checkpoint_in != f"sim://trial/{lease.trial_id}/epoch/{start}":
            raise AssertionError(f"trial {lease.trial_id} resumed from {lease.checkpoint_in!r}, not its own "
                                 f"checkpoint at epoch {start}")
        segment = objective.train(lease.params, start, end)
        ledger.charge(end - start, end, segment.accuracy)
        if trace is not None:
            trace.append((lease.trial_id, lease.budget_from, lease.budget_to, segment.accuracy))
        backend.complete(lease, segment.accuracy)
