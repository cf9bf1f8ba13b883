"""The Ray runtime of `hpo worker` without a Ray cluster: options, slot math, the pool's
restart/drain logic against a stand-in for Ray, and a slot draining a real trainer against a
fake API. The real thing (local Ray, PostgreSQL, SIGKILL, SIGTERM) is tests/e2e/test_ray_workers.py."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hpo_service.cli import EXIT_USAGE, app, main
from hpo_service.client import HpoClient
from hpo_service.workers import ray_runtime
from hpo_service.workers.process import WorkerOptions
from hpo_service.workers.ray_actor import SlotWorker, slot_worker_id
from hpo_service.workers.ray_runtime import (
    RayOptions,
    SlotPool,
    actor_options,
    drain_on_signals,
    local_init_kwargs,
    plan_slots,
    ray_options_from_cli,
    slots_that_fit,
)

# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("concurrency", "address", "slots", "gpus", "expected"),
    [
        (1, None, None, None, None),
        (3, None, None, None, None),
        (1, "local", None, None, RayOptions("local")),
        (1, "local", 2, 0.25, RayOptions("local", slots=2, gpus_per_trial=0.25)),
        (1, " auto ", 4, 1.0, RayOptions("auto", slots=4, gpus_per_trial=1.0)),
        (1, "ray-head:6379", 8, 2.0, RayOptions("ray-head:6379", slots=8, gpus_per_trial=2.0)),
    ],
)
def test_runtime_choice(concurrency: int, address: str | None, slots: int | None, gpus: float | None,
                        expected: RayOptions | None) -> None:
    assert ray_options_from_cli(concurrency, address, slots, gpus) == expected


@pytest.mark.parametrize(
    ("concurrency", "address", "slots", "gpus", "message"),
    [
        (1, None, 2, None, "--slots need --ray-address"),
        (1, None, None, 0.5, "--gpus-per-trial need --ray-address"),
        (2, "local", None, None, "with --ray-address the pool size is --slots"),
        (1, "local", None, 1.5, "fraction of one GPU"),
        (1, "local", None, -1.0, "finite number >= 0"),
        (1, "local", None, math.nan, "finite number >= 0"),
        (1, "local", None, 0.00001, "precision"),
        (1, "  ", None, None, "empty"),
    ],
)
def test_runtime_choice_refuses_conflicts(concurrency: int, address: str | None, slots: int | None,
                                          gpus: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ray_options_from_cli(concurrency, address, slots, gpus)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--slots", "2"], "--slots need --ray-address"),
        (["worker", "--ray-address", "local", "--concurrency", "2"], "--slots"),
        (["worker", "--ray-address", "local", "--gpus-per-trial", "1.5"], "fraction of one GPU"),
    ],
)
def test_cli_refuses_conflicting_worker_options(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in " ".join(result.output.split())


def test_cli_hands_ray_options_to_the_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[WorkerOptions, RayOptions]] = []

    def fake_run(options: WorkerOptions, ray: RayOptions) -> int:
        calls.append((options, ray))
        return 0

    monkeypatch.setattr(ray_runtime, "run_ray_workers", fake_run)
    result = CliRunner().invoke(app, [
        "worker", "--server", "http://api:8000", "--ray-address", "local", "--slots", "2",
        "--gpus-per-trial", "0.25", "--checkpoint-uri", tmp_path.as_uri(), "--study", "7",
    ])
    assert result.exit_code == 0, result.output
    [(options, ray)] = calls
    assert ray == RayOptions("local", slots=2, gpus_per_trial=0.25)
    assert (options.server, options.checkpoint_uri, options.studies) == ("http://api:8000", tmp_path.as_uri(), [7])


def test_cli_negative_gpus_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["hpo", "worker", "--ray-address", "local", "--gpus-per-trial", "-1"])
    with pytest.raises(SystemExit) as exit_info:
        main()  # click's own range check, mapped to EX_USAGE by the entry point
    assert exit_info.value.code == EXIT_USAGE


# --------------------------------------------------------------------------- slot math


def _node(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}


@pytest.mark.parametrize(
    ("nodes", "gpus", "expected"),
    [
        ([_node(2)], 0.0, 2),  # CPU slots: one per CPU
        ([_node(8, 1)], 0.25, 4),  # four quarter-GPU trials on one GPU
        ([_node(2, 1)], 0.25, 2),  # ...unless the CPUs run out first
        ([_node(16, 2)], 1.0, 2),
        ([_node(16, 4)], 2.0, 2),
        ([_node(16, 1)], 2.0, 0),  # a 2-GPU trial never fits a 1-GPU node
        ([_node(8, 1), _node(8, 1)], 0.4, 4),  # fractions do not span nodes: 2 + 2, not 5
        ([_node(16, 3)], 1 / 3, 9),  # float division must not lose a slot
        ([_node(0)], 0.0, 0),  # a head node with no CPUs for work
    ],
)
def test_slots_that_fit(nodes: list[dict[str, float]], gpus: float, expected: int) -> None:
    assert slots_that_fit(nodes, gpus, 1.0) == expected


def test_plan_slots_defaults_to_what_fits() -> None:
    assert plan_slots(RayOptions("auto", gpus_per_trial=0.5), [_node(8, 2)]) == 4


def test_plan_slots_refuses_gpu_slots_on_a_local_machine_without_gpu() -> None:
    with pytest.raises(ValueError, match="sees no GPU"):
        plan_slots(RayOptions("local", slots=2, gpus_per_trial=0.25), [_node(2)])


def test_plan_slots_refuses_more_local_slots_than_fit() -> None:
    with pytest.raises(ValueError, match="fits 4"):
        plan_slots(RayOptions("local", slots=5, gpus_per_trial=0.25), [_node(8, 1)])


def test_plan_slots_lets_a_cluster_queue_extra_slots(caplog: pytest.LogCaptureFixture) -> None:
    assert plan_slots(RayOptions("ray-head:6379", slots=6, gpus_per_trial=1.0), [_node(8, 2)]) == 6
    assert "6 slots requested, the cluster fits 2 now" in caplog.text


def test_plan_slots_without_any_fit_names_the_cluster() -> None:
    with pytest.raises(ValueError, match="1 node"):
        plan_slots(RayOptions("auto", gpus_per_trial=1.0), [_node(4)])


def test_actor_options_restart_forever_but_never_retry_a_call() -> None:
    options = actor_options(RayOptions("local", slots=4, gpus_per_trial=0.25))
    assert options["max_restarts"] == -1 and options["max_task_retries"] == 0
    assert (options["num_gpus"], options["num_cpus"]) == (0.25, 1.0)
    assert options["max_concurrency"] >= 2  # drain() must run while run() is busy


def test_local_ray_is_private_quiet_and_fits_every_slot() -> None:
    kwargs = local_init_kwargs(RayOptions("local", slots=4), "/tmp/x", cpu_count=2)
    assert kwargs["address"] == "local" and kwargs["_temp_dir"] == "/tmp/x"
    assert kwargs["num_cpus"] == 4  # logical CPUs: 4 slots run on a 2-core laptop
    assert kwargs["include_dashboard"] is False and kwargs["log_to_driver"] is True
    assert local_init_kwargs(RayOptions("local"), "/tmp/x", cpu_count=2)["num_cpus"] == 2


# --------------------------------------------------------------------------- the pool


class RayError(Exception):
    pass


class RayActorError(RayError):
    def __init__(self, message: str = "actor died", actor_init_failed: bool = False) -> None:
        super().__init__(message)
        self.actor_init_failed = actor_init_failed


class ActorUnavailableError(RayActorError):
    pass


class RayTaskError(RayError):
    pass


class OutOfMemoryError(RayError):
    pass


FAKE_EXCEPTIONS = SimpleNamespace(RayError=RayError, RayActorError=RayActorError,
                                  ActorUnavailableError=ActorUnavailableError, RayTaskError=RayTaskError)


def test_the_fake_exceptions_mirror_rays_hierarchy() -> None:
    exceptions = pytest.importorskip("ray.exceptions")
    assert issubclass(exceptions.ActorUnavailableError, exceptions.RayActorError)
    assert issubclass(exceptions.ActorDiedError, exceptions.RayActorError)
    assert issubclass(exceptions.RayActorError, exceptions.RayError)
    assert issubclass(exceptions.RayTaskError, exceptions.RayError)
    assert not issubclass(exceptions.RayTaskError, exceptions.RayActorError)
    assert issubclass(exceptions.OutOfMemoryError, exceptions.RayError)
    assert not issubclass(exceptions.OutOfMemoryError, exceptions.RayTaskError)
    assert "actor_init_failed" in exceptions.RayActorError.__init__.__code__.co_varnames


class FakeRef:
    def __init__(self, outcome: Callable[[], Any] | None = None) -> None:
        self._outcome = outcome
        self._event = threading.Event()
        if outcome is not None:
            self._event.set()

    def resolve(self, outcome: Callable[[], Any]) -> None:
        self._outcome = outcome
        self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def get(self) -> Any:
        assert self._outcome is not None
        return self._outcome()


def _value(value: Any) -> Callable[[], Any]:
    return lambda: value


def _raise(error: Exception) -> Callable[[], Any]:
    def outcome() -> Any:
        raise error

    return outcome


class _Method:
    def __init__(self, handler: Callable[[], FakeRef]) -> None:
        self.remote = handler


class FakeActor:
    """``run`` outcomes are scripted; "block" waits for drain (or forever, if ``obey_drain`` is off)."""

    def __init__(self, runs: list[Any], probes: list[Any] | None = None, obey_drain: bool = True) -> None:
        self._runs, self._probes = list(runs), list(probes or [])
        self.obey_drain = obey_drain
        self.blocked: list[FakeRef] = []
        self.drains = 0
        self.run_calls = 0
        self.run, self.drain, self.info = _Method(self._run), _Method(self._drain), _Method(self._info)

    def _run(self) -> FakeRef:
        self.run_calls += 1
        script = self._runs.pop(0)
        if script == "block":
            ref = FakeRef()
            self.blocked.append(ref)
            return ref
        return FakeRef(_raise(script) if isinstance(script, Exception) else _value(script))

    def _drain(self) -> FakeRef:
        self.drains += 1
        if self.obey_drain:
            for ref in self.blocked:
                ref.resolve(_value(1))
        return FakeRef(_value(None))

    def _info(self) -> FakeRef:
        script = self._probes.pop(0) if self._probes else {"worker_id": "host-2-ray-slot0"}
        return FakeRef(_raise(script) if isinstance(script, Exception) else _value(script))


class FakeRay:
    exceptions = FAKE_EXCEPTIONS

    def __init__(self) -> None:
        self.killed: list[FakeActor] = []

    def wait(self, refs: list[FakeRef], *, num_returns: int, timeout: float) -> tuple[list[FakeRef], list[FakeRef]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [ref for ref in refs if ref.ready()]
            if ready:
                return ready[:num_returns], [ref for ref in refs if ref not in ready[:num_returns]]
            time.sleep(0.001)
        return [], refs

    def get(self, ref: FakeRef) -> Any:
        return ref.get()

    def kill(self, actor: FakeActor, *, no_restart: bool) -> None:
        assert no_restart
        self.killed.append(actor)


class SteppingClock:
    """Each reading is ``step`` seconds after the last, so back-offs pass at once."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _pool(actors: list[FakeActor], ray: FakeRay | None = None, **kwargs: Any) -> tuple[SlotPool, FakeRay]:
    ray = ray or FakeRay()
    return SlotPool(ray, actors, poll_s=0.01, **kwargs), ray


def test_pool_ends_when_every_slot_is_done() -> None:
    pool, _ = _pool([FakeActor([3]), FakeActor([5])])
    assert pool.run() == 0
    assert pool.outcomes() == {0: "done", 1: "done"}


def test_a_dead_actor_is_run_again_once_ray_has_restarted_it() -> None:
    restarting = ActorUnavailableError("The actor is restarting")
    actor = FakeActor([ActorUnavailableError("Socket closed"), 2], probes=[restarting, restarting])
    pool, _ = _pool([actor], clock=SteppingClock(10.0))
    assert pool.run() == 0
    assert (actor.run_calls, pool.restarts, pool.outcomes()) == (2, 1, {0: "done"})


def test_an_actor_killed_for_memory_is_run_again_too() -> None:
    actor = FakeActor([OutOfMemoryError("Task was killed due to the node running low on memory"), 1])
    pool, _ = _pool([actor], clock=SteppingClock(10.0))
    assert pool.run() == 0
    assert (actor.run_calls, pool.restarts) == (2, 1)


def test_an_actor_ray_will_not_restart_is_given_up() -> None:
    actor = FakeActor([RayActorError("died")], probes=[RayActorError("dead")] * 3)
    pool, _ = _pool([actor], clock=SteppingClock(10.0))
    assert pool.run() == 1
    assert pool.outcomes() == {0: "lost"} and actor.run_calls == 1


def test_an_actor_that_cannot_start_fails_its_slot_without_restarts() -> None:
    actor = FakeActor([RayActorError("creation task failed", actor_init_failed=True)])
    pool, _ = _pool([actor])
    assert pool.run() == 1
    assert pool.outcomes() == {0: "failed"} and pool.restarts == 0


def test_an_error_inside_the_loop_stops_its_slot_only() -> None:
    pool, _ = _pool([FakeActor([RayTaskError("Unauthorized: HTTP 401")]), FakeActor([4])])
    assert pool.run() == 1
    assert pool.outcomes() == {0: "failed", 1: "done"}


def test_drain_tells_every_slot_and_waits_for_it() -> None:
    actors = [FakeActor(["block"]), FakeActor(["block"])]
    pool, ray = _pool(actors)
    threading.Timer(0.05, pool.request_drain).start()
    assert pool.run() == 0
    assert pool.outcomes() == {0: "drained", 1: "drained"}
    assert [a.drains for a in actors] == [1, 1] and ray.killed == []


def test_a_slot_that_does_not_drain_in_time_is_killed() -> None:
    stubborn = FakeActor(["block"], obey_drain=False)
    pool, ray = _pool([stubborn, FakeActor(["block"])], drain_timeout_s=0.05)
    pool.request_drain()
    assert pool.run() == 1
    assert pool.outcomes() == {0: "killed", 1: "drained"} and ray.killed == [stubborn]


def test_a_second_signal_kills_at_once() -> None:
    stubborn = FakeActor(["block"], obey_drain=False)
    pool, ray = _pool([stubborn], drain_timeout_s=3600)
    threading.Timer(0.05, pool.request_drain).start()
    threading.Timer(0.1, pool.request_drain).start()
    started = time.monotonic()
    assert pool.run() == 1
    assert time.monotonic() - started < 5 and ray.killed == [stubborn]


def test_signals_request_a_drain_and_are_restored_afterwards() -> None:
    calls: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with drain_on_signals(lambda: calls.append(1)):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls == [1, 1]
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------- a slot, draining


class FakeApi:
    """The worker half of the REST API, for one trial of the synthetic trainer."""

    def __init__(self, budget_to: float) -> None:
        self.budget_to = budget_to
        self.leased = False
        self.reports: list[dict[str, Any]] = []
        self.fails: list[dict[str, Any]] = []
        self.completes: list[dict[str, Any]] = []
        self.first_report = threading.Event()

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        if path == "/api/v1/leases":
            if self.leased:
                return httpx.Response(204)
            self.leased = True
            return httpx.Response(200, json=self._lease(body["worker_id"]))
        if path.endswith("/reports"):
            self.reports += body["reports"]
            self.first_report.set()
        elif path.endswith("/fail"):
            self.fails.append(body)
        elif path.endswith("/complete"):
            self.completes.append(body)
        return httpx.Response(200, json={"directive": "continue", "expires_at": None})

    def _lease(self, worker_id: str) -> dict[str, Any]:
        return {
            "trial_id": 5, "study_id": 2, "number": 5, "attempt": 1, "lease_token": "token-1",
            "expires_at": "2030-01-01T00:00:00Z", "lease_seconds": 60.0, "params": {"learning_rate": 0.01},
            "trainer": {"name": "synthetic", "params": {"sleep_per_unit": 0.05, "noise": 0.0}},
            "budget_from": 0.0, "budget_to": self.budget_to, "checkpoint_in": None, "seed": 1, "objective": "loss",
        }


@pytest.fixture
def slot_and_api(tmp_path: Path) -> Iterator[tuple[SlotWorker, FakeApi]]:
    api = FakeApi(budget_to=200.0)  # 10 s of "training": drained long before the end
    client = HpoClient("http://fake", transport=httpx.MockTransport(api.handle), retries=0)
    options = WorkerOptions(server="http://fake", checkpoint_uri=tmp_path.as_uri(), wait_s=0.0,
                            exit_when_idle=True)
    yield SlotWorker(0, options, gpus=0.0, client=client), api
    client.close()


def test_a_drained_slot_releases_its_trial_as_retryable(slot_and_api: tuple[SlotWorker, FakeApi],
                                                        tmp_path: Path) -> None:
    slot, api = slot_and_api
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(slot.run()))
    runner.start()
    assert api.first_report.wait(10), "the trainer never reported"
    slot.drain()
    runner.join(10)
    assert not runner.is_alive(), "run() did not return after drain()"
    assert result == [1] and api.completes == []
    [failure] = api.fails
    assert failure["retryable"] is True and "shutting down" in failure["error"]
    # The trainer stopped early, its checkpoint was committed at the budget it reached, and the
    # release hands it to the server, so that the retry resumes from there.
    reached = max(report["step"] for report in api.reports)
    assert reached < 200
    committed = tmp_path / "study-2" / "trial-5" / f"budget-{reached:g}-a1"  # lease attempt 1 (F8)
    assert (committed / "state.json").is_file()
    assert (failure["checkpoint_out"], failure["budget_done"]) == (committed.resolve().as_uri(), reached)


def test_a_second_run_call_never_starts_a_second_loop(slot_and_api: tuple[SlotWorker, FakeApi]) -> None:
    slot, api = slot_and_api
    first = threading.Thread(target=slot.run)
    first.start()
    assert api.first_report.wait(10)
    second_result: list[int] = []
    second = threading.Thread(target=lambda: second_result.append(slot.run()))
    second.start()  # as after a run() Ray called lost while it still ran
    time.sleep(0.3)
    assert second.is_alive() and len(api.fails) == 0, "the second call must wait for the first loop"
    slot.drain()
    first.join(10)
    second.join(10)
    assert second_result == [0] and len(api.fails) == 1


def test_a_slot_names_itself_by_host_pid_and_slot(slot_and_api: tuple[SlotWorker, FakeApi]) -> None:
    slot, _ = slot_and_api
    info = slot.info()
    assert info["worker_id"] == slot_worker_id(0) == f"{info['hostname']}-{os.getpid()}-ray-slot0"
    assert info["pid"] == os.getpid() and info["slot"] == 0
