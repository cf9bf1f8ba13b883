"""`hpo worker --ray-address local|auto|<host:port>`: a pool of Ray actors running the worker loop.

The `hpo worker` process is the supervisor (a Ray driver). It starts one actor per slot,
``ray.remote(SlotWorker)`` with ``max_restarts=-1`` and ``num_gpus=--gpus-per-trial``, and
calls the long-running ``run()`` of each (lease -> train -> report -> complete, the
unchanged `WorkerLoop`). A slot is a whole GPU or a fraction of one (0.25 packs four trials
on a GPU; Ray sets ``CUDA_VISIBLE_DEVICES``); with ``--gpus-per-trial 0`` slots are CPU
processes. Every slot also takes ``CPUS_PER_SLOT`` logical CPUs.

The database stays the single source of truth: Ray never resubmits a trial.

- An actor that dies (SIGKILL, OOM, node loss) is restarted by Ray as a new worker
  (a new ``worker_id``); the supervisor calls ``run()`` again once it answers. The dead
  process's trial comes back through lease expiry on the server.
- SIGTERM / Ctrl-C drains: each actor's loop is told to stop, its trainer returns at the
  next report with a checkpoint if it can, the trial is released as retryable, and the
  supervisor waits (``drain_timeout_s``) before shutting Ray down. A second signal, or the
  timeout, kills the actors; their trials then return through lease expiry.
- Checkpoints are addressed by URI (``--checkpoint-uri``); each actor builds its own
  `CheckpointStore` from it, so a trial promoted onto another node resumes from the same
  URI (a shared folder for ``file://``; an object store is one more store class).

``local`` starts a private Ray instance in a temporary folder (no dashboard, workers' logs
forwarded to this process's stderr) and stops it on exit; ``auto`` or an address joins a
running cluster. Ray is imported only here and only when asked for, so plain workers do not
need it installed.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType, ModuleType
from typing import Any

from hpo_service.client import resolve_token
from hpo_service.workers.checkpoints import store_from_uri
from hpo_service.workers.process import WorkerOptions, configure_logging
from hpo_service.workers.ray_actor import SlotWorker

log = logging.getLogger("hpo_service.worker.ray")

LOCAL_ADDRESS = "local"
CPUS_PER_SLOT = 1.0
# Our actors pass only small values through Ray; a small object store keeps /dev/shm free.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
DEFAULT_DRAIN_TIMEOUT_S = 120.0
# Ray's actors may run more than one method at once: run() holds one thread, drain()/info() another.
ACTOR_CONCURRENCY = 4
_RESTART_POLL_S, _RESTART_POLL_MAX_S = 0.5, 5.0
_DEAD_PROBES_BEFORE_GIVING_UP = 3
_EPSILON = 1e-9
LOG_FLUSH_S = 1.0


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster named by --ray-address cannot be joined."""


# --- options and resource math (pure) ---------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    address: str  # "local", "auto", "host:port" or "ray://host:port"
    slots: int | None = None  # None: as many as the cluster fits now
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = CPUS_PER_SLOT
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise ValueError("--ray-address is empty: give local, auto or host:port")
        if self.slots is not None and self.slots < 1:
            raise ValueError(f"--slots must be at least 1, got {self.slots}")
        check_gpus_per_trial(self.gpus_per_trial)
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ValueError(f"CPUs per slot must be a positive number, got {self.cpus_per_trial}")

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL_ADDRESS


def check_gpus_per_trial(gpus: float) -> None:
    """Ray accepts a fraction of one GPU or a whole number of GPUs per actor."""
    if not math.isfinite(gpus) or gpus < 0:
        raise ValueError(f"--gpus-per-trial must be a finite number >= 0, got {gpus}")
    if gpus > 1 and not float(gpus).is_integer():
        raise ValueError(
            f"--gpus-per-trial {gpus:g}: a trial gets a fraction of one GPU (e.g. 0.25) or whole GPUs (1, 2, ...)"
        )
    if 0 < gpus < 1e-4:
        raise ValueError(f"--gpus-per-trial {gpus:g} is below Ray's resource precision (0.0001)")


def ray_options_from_cli(
    concurrency: int, ray_address: str | None, slots: int | None, gpus_per_trial: float | None,
    threads: int | None = None,
) -> RayOptions | None:
    """Which runtime `hpo worker` uses: None for plain processes, else the Ray pool's options.

    ``--ray-address`` decides: with it, the pool size is ``--slots`` and ``--concurrency``
    must stay 1; without it, ``--concurrency`` processes run and the Ray options are refused.
    Both refusals are errors rather than silently ignoring an option the user typed.
    """
    if ray_address is None:
        given = [name for name, value in (("--slots", slots), ("--gpus-per-trial", gpus_per_trial)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} need --ray-address (local, auto or host:port); "
                             "without Ray, use --concurrency for worker processes")
        return None
    if concurrency != 1:
        raise ValueError("--concurrency sets plain worker processes; with --ray-address the pool size is --slots")
    if threads is not None:
        raise ValueError("--threads sets the torch threads of plain worker processes; with --ray-address each "
                         "slot's CPUs come from Ray (cpus_per_trial)")
    return RayOptions(address=ray_address.strip(), slots=slots, gpus_per_trial=gpus_per_trial or 0.0)


def slots_on_node(resources: Mapping[str, float], gpus_per_trial: float, cpus_per_trial: float) -> int:
    """How many slots one node holds. Fractional GPUs never span nodes, so count per node."""
    fit = math.floor(float(resources.get("CPU", 0.0)) / cpus_per_trial + _EPSILON)
    if gpus_per_trial > 0:
        fit = min(fit, math.floor(float(resources.get("GPU", 0.0)) / gpus_per_trial + _EPSILON))
    return max(0, fit)


def slots_that_fit(nodes: Sequence[Mapping[str, float]], gpus_per_trial: float, cpus_per_trial: float) -> int:
    return sum(slots_on_node(node, gpus_per_trial, cpus_per_trial) for node in nodes)


def plan_slots(options: RayOptions, nodes: Sequence[Mapping[str, float]]) -> int:
    """The number of actors to start; ValueError when none can ever run here."""
    fit = slots_that_fit(nodes, options.gpus_per_trial, options.cpus_per_trial)
    gpus = sum(float(node.get("GPU", 0.0)) for node in nodes)
    if options.gpus_per_trial > 0 and gpus == 0 and options.is_local:
        raise ValueError(f"--gpus-per-trial {options.gpus_per_trial:g}: Ray sees no GPU on this machine; "
                         "use --gpus-per-trial 0 for CPU slots")
    if options.slots is None:
        if fit == 0:
            raise ValueError(f"no slot of {options.gpus_per_trial:g} GPU and {options.cpus_per_trial:g} CPU fits "
                             f"the Ray cluster ({_describe(nodes)}); give --slots to queue for resources")
        return fit
    if options.slots > fit:
        if options.is_local:
            raise ValueError(f"--slots {options.slots} at {options.gpus_per_trial:g} GPU each: this machine fits "
                             f"{fit} ({_describe(nodes)})")
        log.warning("%d slots requested, the cluster fits %d now (%s): the others wait for resources",
                    options.slots, fit, _describe(nodes))
    return options.slots


def actor_options(options: RayOptions) -> dict[str, Any]:
    return {
        "num_cpus": options.cpus_per_trial,
        "num_gpus": options.gpus_per_trial,
        "max_restarts": -1,  # Ray replaces a dead actor, forever
        "max_task_retries": 0,  # ...but never re-runs a call: the supervisor decides (trials come back by lease)
        "max_concurrency": ACTOR_CONCURRENCY,
    }


def local_init_kwargs(options: RayOptions, temp_dir: str, cpu_count: int) -> dict[str, Any]:
    """ray.init arguments for ``--ray-address local``: a private, quiet instance on this machine."""
    wanted_cpus = math.ceil((options.slots or 0) * options.cpus_per_trial - _EPSILON)
    return {
        "address": "local",  # always a new instance, even when RAY_ADDRESS points elsewhere
        "num_cpus": max(cpu_count, wanted_cpus),  # logical CPUs: N slots fit even on a 2-core laptop
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": logging.WARNING,
        "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        "_temp_dir": temp_dir,
    }


def _describe(nodes: Sequence[Mapping[str, float]]) -> str:
    cpus = sum(float(n.get("CPU", 0.0)) for n in nodes)
    gpus = sum(float(n.get("GPU", 0.0)) for n in nodes)
    return f"{len(nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs"


# --- the pool ----------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    actor: Any
    run_ref: Any = None
    probe_ref: Any = None  # info() sent to an actor Ray is restarting
    probe_at: float | None = None
    backoff: float = _RESTART_POLL_S
    dead_probes: int = 0
    restarts: int = 0
    outcome: str | None = None  # done | drained | failed | lost | killed


class SlotPool:
    """Supervises the slots' ``run()`` calls: restarts after a death, drain on request.

    ``ray`` is the Ray module (or a stand-in with ``wait``, ``get``, ``kill`` and
    ``exceptions``); ``actors`` are handles with ``run``, ``drain`` and ``info`` methods.
    After a lost ``run()`` call the pool calls ``run()`` again once ``info()`` answers; the
    actor makes sure that never starts a second loop beside one still running.
    ``request_drain`` may be called from a signal handler: the first call drains, the second
    kills the actors.
    """

    def __init__(self, ray: Any, actors: Sequence[Any], *, drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
                 poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._ray = ray
        self._slots = [_Slot(index, actor) for index, actor in enumerate(actors)]
        self._drain_timeout_s = drain_timeout_s
        self._poll_s = poll_s
        self._clock = clock
        self._drain = threading.Event()
        self._force = threading.Event()
        self._drain_deadline: float | None = None

    def request_drain(self) -> None:
        if self._drain.is_set():
            self._force.set()
        self._drain.set()

    @property
    def restarts(self) -> int:
        return sum(slot.restarts for slot in self._slots)

    def outcomes(self) -> dict[int, str | None]:
        return {slot.index: slot.outcome for slot in self._slots}

    def run(self) -> int:
        """Until every slot has ended; 0 when all ended cleanly (done or drained), else 1."""
        for slot in self._slots:
            slot.run_ref = slot.actor.run.remote()
        while any(slot.outcome is None for slot in self._slots):
            self._handle_drain()
            refs = [ref for slot in self._active() for ref in (slot.run_ref, slot.probe_ref) if ref is not None]
            if refs:
                ready, _ = self._ray.wait(refs, num_returns=1, timeout=self._poll_s)
            else:
                ready = []
                time.sleep(self._poll_s)
            for ref in ready:
                self._settle(ref)
            self._probe_restarting()
        return 0 if all(slot.outcome in ("done", "drained") for slot in self._slots) else 1

    def _active(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.outcome is None]

    def _handle_drain(self) -> None:
        if not self._drain.is_set():
            return
        if self._drain_deadline is None:
            self._drain_deadline = self._clock() + self._drain_timeout_s
            log.info("draining %d slot(s): running trials checkpoint and are released as retryable "
                     "(up to %.0fs; signal again to stop at once)", len(self._active()), self._drain_timeout_s)
            for slot in self._active():
                if slot.run_ref is None:  # Ray is restarting it: nothing runs there to drain
                    slot.outcome, slot.probe_ref = "drained", None
                else:
                    slot.actor.drain.remote()
        if self._force.is_set() or self._clock() >= self._drain_deadline:
            why = "second signal" if self._force.is_set() else f"drain took over {self._drain_timeout_s:.0f}s"
            for slot in self._active():
                log.warning("slot %d: killing its actor (%s); its trial returns through lease expiry", slot.index, why)
                self._ray.kill(slot.actor, no_restart=True)
                slot.outcome = "killed"

    def _settle(self, ref: Any) -> None:
        for slot in self._active():
            if slot.run_ref is not None and ref == slot.run_ref:
                slot.run_ref = None
                self._settle_run(slot, ref)
            elif slot.probe_ref is not None and ref == slot.probe_ref:
                slot.probe_ref = None
                self._settle_probe(slot, ref)

    def _settle_run(self, slot: _Slot, ref: Any) -> None:
        errors = self._ray.exceptions
        try:
            segments = self._ray.get(ref)
        except errors.RayTaskError as error:  # raised by the loop itself, e.g. a rejected token
            log.error("slot %d stopped on an error: %s", slot.index, _last_line(error))
            slot.outcome = "failed"
        except errors.RayError as error:  # the actor process is gone: SIGKILL, OOM, node loss, ...
            if getattr(error, "actor_init_failed", False):
                log.error("slot %d: the actor failed to start: %s", slot.index, _first_line(error))
                slot.outcome = "failed"
            elif self._drain.is_set():
                slot.outcome = "lost"
            else:
                slot.restarts += 1
                log.warning("slot %d: actor process died (%s); Ray restarts it as a new worker, and its "
                            "trial returns through lease expiry", slot.index, _first_line(error))
                slot.probe_at, slot.backoff, slot.dead_probes = self._clock(), _RESTART_POLL_S, 0
        else:
            slot.outcome = "drained" if self._drain.is_set() else "done"
            log.info("slot %d %s after %s trial segment(s)", slot.index, slot.outcome, segments)

    def _settle_probe(self, slot: _Slot, ref: Any) -> None:
        errors = self._ray.exceptions
        try:
            info = self._ray.get(ref)
        except errors.ActorUnavailableError:
            pass  # still restarting
        except errors.RayError as error:
            slot.dead_probes += 1
            if getattr(error, "actor_init_failed", False) or slot.dead_probes >= _DEAD_PROBES_BEFORE_GIVING_UP:
                log.error("slot %d: Ray will not restart the actor: %s", slot.index, _first_line(error))
                slot.outcome = "lost"
                return
        else:
            log.info("slot %d is back as worker %s; running the loop again", slot.index, info.get("worker_id"))
            slot.run_ref = slot.actor.run.remote()
            return
        slot.probe_at = self._clock() + slot.backoff
        slot.backoff = min(slot.backoff * 2, _RESTART_POLL_MAX_S)

    def _probe_restarting(self) -> None:
        now = self._clock()
        for slot in self._active():
            if slot.probe_at is not None and slot.probe_at <= now and slot.probe_ref is None:
                slot.probe_at = None
                slot.probe_ref = slot.actor.info.remote()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


# --- running it -----------------------------------------------------------------------------


def run_ray_workers(options: WorkerOptions, ray_options: RayOptions) -> int:
    """Run the pool until it ends or is drained; the exit status of `hpo worker`.

    Raises RayUnavailable when Ray is missing or the cluster cannot be joined, and
    ValueError for options the cluster cannot satisfy (e.g. GPU slots without a GPU).
    """
    configure_logging()
    store_from_uri(options.checkpoint_uri)  # a bad URI fails here once, not in every actor
    # Resolved here: an actor on another node has no token file of this machine.
    options = replace(options, token=resolve_token(options.token))
    ray = import_ray()
    with ray_session(ray, ray_options) as nodes:
        slots = plan_slots(ray_options, nodes)
        actor_class = ray.remote(SlotWorker).options(**actor_options(ray_options))
        actors = [actor_class.remote(index, options, ray_options.gpus_per_trial) for index in range(slots)]
        log.info("starting %d slot(s) of %g GPU / %g CPU on %s", slots, ray_options.gpus_per_trial,
                 ray_options.cpus_per_trial, _describe(nodes))
        pool = SlotPool(ray, actors, drain_timeout_s=ray_options.drain_timeout_s)
        with drain_on_signals(pool.request_drain):
            code = pool.run()
        log.info("pool stopped: %s; %d actor restart(s)", pool.outcomes(), pool.restarts)
        return code


def import_ray() -> ModuleType:
    # Read by Ray at import time. Progress lines of different trials differ only in numbers,
    # which Ray's log de-duplication ignores: it would hide most of them.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in log files
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable(
            "--ray-address needs Ray installed in this environment: pip install 'ray[default]'"
        ) from error
    return ray


@contextmanager
def ray_session(ray: Any, options: RayOptions) -> Iterator[list[dict[str, float]]]:
    """Start (local) or join (auto/address) Ray; yields the alive nodes' resources; shuts down after."""
    temp_dir = tempfile.mkdtemp(prefix="hpo-ray-") if options.is_local else None
    started = time.monotonic()
    try:
        try:
            if temp_dir is not None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                # A fresh local instance turns on token auth and says so at WARNING; nothing to act on.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                ray.init(**local_init_kwargs(options, temp_dir, os.cpu_count() or 1))
            else:
                ray.init(address=options.address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, getattr(ray.exceptions, "AuthenticationError", ConnectionError)) as error:
            # AuthenticationError: the cluster uses token auth and this node has not got its token
            # (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
            raise RayUnavailable(f"cannot join the Ray cluster at {options.address!r}: {error}") from error
        nodes = [{key: float(value) for key, value in node["Resources"].items()}
                 for node in ray.nodes() if node.get("Alive")]
        log.info("Ray %s in %.1fs: %s", "started" if temp_dir else f"joined at {options.address}",
                 time.monotonic() - started, _describe(nodes))
        yield nodes
    finally:
        if ray.is_initialized():
            time.sleep(LOG_FLUSH_S)  # Ray forwards the actors' last log lines asynchronously
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def drain_on_signals(request_drain: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``request_drain`` (installed after ray.init, which sets its own)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        request_drain()

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
