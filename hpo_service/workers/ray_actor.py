"""One slot of `hpo worker --ray-address ...`: the worker loop inside a Ray actor process.

`SlotWorker` is a plain class; `ray_runtime` turns it into an actor with
``ray.remote(SlotWorker).options(max_restarts=-1, ...)``, so this module imports
nothing from Ray and is tested without a cluster.

When each method is called
--------------------------
- ``__init__`` when Ray creates the actor, and again every time Ray restarts it after
  its process died (SIGKILL, OOM, lost node). A restarted slot is a new worker with a
  new ``worker_id``: the trial the dead process held comes back through lease expiry on
  the server, never through Ray.
- ``run`` once per (re)start, by the supervisor; it runs the unchanged `WorkerLoop`
  until the loop ends (``max_trials``, ``exit_when_idle``) or ``drain`` stops it, and
  returns how many trial segments it ran. It lets errors escape (e.g. a rejected token),
  so the supervisor sees them.
- ``drain`` from the supervisor on SIGTERM / Ctrl-C, on another thread of the actor
  while ``run`` is busy (the actor has ``max_concurrency`` > 1): the running trainer is
  told "stop" at its next report, returns with a checkpoint if it can, and the loop
  releases the trial as retryable with that checkpoint (``fail(checkpoint_out,
  budget_done)``), so the retry trains only the rest of the slice. A trainer that had
  already reached the end of its slice is completed instead.
- ``info`` whenever someone asks which process the slot runs in (tests, the supervisor).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Any

from hpo_service.client import HpoClient
from hpo_service.workers.checkpoints import store_from_uri
from hpo_service.workers.loop import WorkerLoop
from hpo_service.workers.process import WorkerOptions

log = logging.getLogger("hpo_service.worker")

# Ray prefixes every forwarded line with "(SlotWorker pid=..., ip=...)"; the slot number
# says which of the pool's slots that process is.
LOG_FORMAT = "%(asctime)s slot-{slot} %(levelname)s %(message)s"


def slot_worker_id(slot: int, hostname: str | None = None, pid: int | None = None) -> str:
    """``<host>-<pid>-ray-slot<n>``: unique per process, so each restart is a new worker.

    The pid comes first, as in plain workers (``<host>-<pid>``), so an operator can find the
    process of a lease owner; the suffix says it is a Ray slot and which one.
    """
    return f"{hostname or socket.gethostname()}-{pid or os.getpid()}-ray-slot{slot}"


class SlotWorker:
    def __init__(self, slot: int, options: WorkerOptions, gpus: float = 0.0,
                 client: HpoClient | None = None) -> None:
        _configure_logging(slot)
        self.slot = slot
        self.worker_id = slot_worker_id(slot)
        self._options = options
        self._one_loop = threading.Lock()
        # The store is built here, in the actor's own process and node: a file:// root is
        # that node's view of the shared folder, an object store would download from here.
        store = store_from_uri(options.checkpoint_uri)
        self._client = client or HpoClient(options.server, token=options.token, retries=8)
        resources = {"runtime": "ray", "slot": slot, "gpus": gpus}
        self._loop = WorkerLoop(self._client, store, worker_id=self.worker_id, studies=options.studies,
                                wait_s=options.wait_s, resources=resources)
        log.info("slot %d started: worker %s, GPUs %s", slot, self.worker_id, _visible_gpus(gpus))

    def run(self) -> int:
        # Ray may call a run() lost that still runs here (a network partition: "the task may or
        # may not have been executed"); the supervisor then calls run() again. One loop at a
        # time: the second call waits for the first to end (after a drain it returns at once).
        with self._one_loop:
            return self._loop.run(max_trials=self._options.max_trials, exit_when_idle=self._options.exit_when_idle)

    def drain(self) -> None:
        if not self._loop.stop.is_set():
            log.info("slot %d draining: the running trial checkpoints and is released as retryable "
                     "(it resumes from that checkpoint)", self.slot)
        self._loop.stop.set()

    def info(self) -> dict[str, Any]:
        return {"slot": self.slot, "pid": os.getpid(), "worker_id": self.worker_id,
                "hostname": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _configure_logging(slot: int) -> None:
    # The actor's stderr is forwarded by Ray to the stderr of `hpo worker` (log_to_driver).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT.format(slot=slot))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call would drown the progress lines


def _visible_gpus(gpus: float) -> str:
    if gpus <= 0:
        return "none (CPU slot)"
    # Ray sets CUDA_VISIBLE_DEVICES for an actor with num_gpus > 0; a fraction shares the device.
    return f"{gpus:g} of CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '?')}"
