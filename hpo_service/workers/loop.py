"""The worker loop: lease -> train -> report -> complete, over the API only.

The same loop runs in a plain process (`hpo worker`) and, later, inside a Ray
actor: it needs a client, a checkpoint store and a stop flag, nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpo_service.client import HpoClient, new_request_key
from hpo_service.errors import Conflict, HpoError, InvalidInput, RateLimited, ServiceUnavailable
from hpo_service.workers.checkpoints import CheckpointStore
from hpo_service.workers.registry import load_trainer
from hpo_service.workers.trainer import CheckpointError, Directive, Trainer, TrainerError, TrainRequest

log = logging.getLogger("hpo_service.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


MAX_REPORTS_PER_REQUEST = 1000  # the API's limit per batch (ReportsIn); workers import no server code
UNREACHABLE_FIRST_WAIT_S = 2.0
UNREACHABLE_MAX_WAIT_S = 30.0


class Backoff:
    """Waits that double from ``first`` up to ``cap``; ``reset`` starts over."""

    def __init__(self, first: float, cap: float) -> None:
        self._first, self._cap, self._next = first, cap, first

    def next(self) -> float:
        wait, self._next = self._next, min(2 * self._next, self._cap)
        return wait

    def reset(self) -> None:
        self._next = self._first


class ApiReporter:
    """Buffers a trainer's reports and sends them in batches; remembers the server's directive.

    While the server is unreachable (a restart, a database failover) the reports stay buffered
    and training goes on: a trainer stopped by an outage would lose its whole slice. Sending
    is tried again after a wait that doubles up to 30 s (each try blocks for the client's own
    retries), and the last flush of a slice waits for the server (``flush(deliver=True)``).
    Sending a batch twice is harmless: a repeated report is a no-op.
    """

    def __init__(self, client: HpoClient, lease: dict[str, Any], stop: threading.Event,
                 flush_seconds: float = 0.5, unreachable_wait_s: float = UNREACHABLE_FIRST_WAIT_S) -> None:
        self._client = client
        self._lease = lease
        self._stop = stop
        self._flush_seconds = flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._backoff = Backoff(unreachable_wait_s, UNREACHABLE_MAX_WAIT_S)
        self._next_try = 0.0  # monotonic time before which a flush does not try (server unreachable)
        self.directive: Directive = "continue"

    def report(self, step: float, metrics: dict[str, float]) -> Directive:
        self._buffer.append({"step": step, "metrics": metrics})
        due = time.monotonic() - self._last_flush >= self._flush_seconds or step >= self._lease["budget_to"]
        if due and time.monotonic() >= self._next_try:
            self._try_flush()
        return "stop" if self._stop.is_set() else self.directive

    def flush(self, *, deliver: bool = False) -> None:
        """Send the buffered reports; ``deliver``: wait for an unreachable server (until stopped)."""
        while not self._try_flush() and deliver:
            if self._stop.wait(max(0.0, self._next_try - time.monotonic())):
                raise ServiceUnavailable(
                    f"trial {self._lease['trial_id']}: stopped while waiting for the server to take its reports")

    def _try_flush(self) -> bool:
        """True once the buffer is sent; False (buffer kept, next try scheduled) if the server is unreachable."""
        while self._buffer:
            batch = self._buffer[:MAX_REPORTS_PER_REQUEST]
            try:
                ack = self._client.report(self._lease["trial_id"], self._lease["lease_token"], batch)
            except ServiceUnavailable as error:
                wait_s = self._backoff.next()
                log.warning("trial %s: server unreachable, %d report(s) kept, training goes on; next try in %.0f s: %s",
                            self._lease["trial_id"], len(self._buffer), wait_s, error)
                self._next_try = time.monotonic() + wait_s
                return False
            del self._buffer[:len(batch)]
            self._backoff.reset()
            if ack["directive"] == "stop":
                self.directive = "stop"
        self._last_flush = time.monotonic()
        return True

    def log(self, message: str) -> None:
        log.info("trial %s (study %s): %s", self._lease["trial_id"], self._lease["study_id"], message)


@dataclass
class _Heartbeat:
    """Keeps the lease alive while the trainer runs; notices a stale lease or a stop directive."""

    client: HpoClient
    lease: dict[str, Any]
    reporter: ApiReporter
    lost: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(0.5, self.lease["lease_seconds"] / 3)
        while not self._done.wait(interval):
            try:
                ack = self.client.heartbeat(self.lease["trial_id"], self.lease["lease_token"])
            except Conflict:
                self.lost.set()  # fenced off: someone else holds this trial now
                self.reporter.directive = "stop"
                return
            except HpoError as error:
                log.warning("heartbeat failed (will retry): %s", error)
                continue
            if ack["directive"] == "stop":
                self.reporter.directive = "stop"


RATE_LIMITED_FIRST_WAIT_S = 5.0
RATE_LIMITED_MAX_WAIT_S = 60.0  # the server's bad-token window


class WorkerLoop:
    def __init__(
        self, client: HpoClient, store: CheckpointStore, *, worker_id: str | None = None,
        studies: list[int] | None = None, wait_s: float = 5.0, resources: dict[str, Any] | None = None,
        trainer_lookup: Callable[[str], Trainer] = load_trainer,
    ) -> None:
        self.client = client
        self.store = store
        self.worker_id = worker_id or default_worker_id()
        self.studies = studies
        self.wait_s = wait_s
        self.resources = resources or {}
        self.stop = threading.Event()
        self.rate_limited_wait_s = RATE_LIMITED_FIRST_WAIT_S
        self.unreachable_wait_s = UNREACHABLE_FIRST_WAIT_S
        self._trainer_lookup = trainer_lookup

    def run(self, *, max_trials: int | None = None, exit_when_idle: bool = False) -> int:
        """Lease and run trials until stopped; returns how many segments were run."""
        done = 0
        rate_limited = Backoff(self.rate_limited_wait_s, RATE_LIMITED_MAX_WAIT_S)
        # Kept until a lease call is answered: a call that failed past the SDK's retries (an
        # outage) may still have been granted a trial before the server went away, and asking
        # again under the same key gets that trial back instead of leaving it to lease expiry.
        request_key = new_request_key()
        while not self.stop.is_set() and (max_trials is None or done < max_trials):
            try:
                lease = self.client.lease(self.worker_id, wait_s=self.wait_s, studies=self.studies,
                                          resources=self.resources, request_key=request_key)
            except ServiceUnavailable as error:
                log.warning("server unavailable, retrying: %s", error)
                self.stop.wait(1.0)
                continue
            except RateLimited as error:
                # Someone on this worker's address is sending bad tokens (the server limits by
                # address): wait it out, doubling up to the server's one-minute window, not exit.
                wait_s = rate_limited.next()
                log.warning("rate-limited by the server, retrying in %.0f s: %s", wait_s, error)
                self.stop.wait(wait_s)
                continue
            rate_limited.reset()
            request_key = new_request_key()  # answered: the next call is a new request
            if lease is None:
                if exit_when_idle:
                    break
                continue
            self.run_one(lease)
            done += 1
        return done

    def run_one(self, lease: dict[str, Any]) -> None:
        trial_id = lease["trial_id"]
        log.info("trial %s (study %s) attempt %s: budget %g -> %g, params %s", trial_id, lease["study_id"],
                 lease["attempt"], lease["budget_from"], lease["budget_to"], lease["params"])
        reporter = ApiReporter(self.client, lease, self.stop, unreachable_wait_s=self.unreachable_wait_s)
        try:
            with _Heartbeat(self.client, lease, reporter) as heartbeat:
                metrics, checkpoint_uri, budget_done = self._train(lease, reporter)
            if heartbeat.lost.is_set():
                log.warning("trial %s: lease lost while training; dropping the result", trial_id)
                return
            if self.stop.is_set() and budget_done < lease["budget_to"]:
                self._release(lease, checkpoint_uri, budget_done)
                return
            # Not stopped, or the drain came after the last step: the slice is whole, so it counts.
            self._deliver(lease, "its completion",
                          lambda: self.client.complete(trial_id, lease["lease_token"], metrics, checkpoint_uri))
        except Conflict as error:
            # A checkpoint we committed is in this attempt's own folder, recorded nowhere: left as garbage.
            log.warning("trial %s: the server refused our lease, dropping it: %s", trial_id, error)
        except CheckpointError as error:
            self._fail(lease, f"checkpoint unusable: {error}", retryable=True, checkpoint_invalid=True)
        except TrainerError as error:
            self._fail(lease, f"trainer error: {error}", retryable=False)
        except ServiceUnavailable as error:
            # Only when stopping while the server is unreachable: the lease will expire and the
            # server requeues the trial from its last checkpoint.
            log.error("trial %s: server unreachable, leaving the trial to lease expiry: %s", trial_id, error)
        except HpoError as error:
            log.error("trial %s: the server rejected the result: %s", trial_id, error)
        except Exception:
            self._fail(lease, traceback.format_exc(limit=20), retryable=True)

    def _train(self, lease: dict[str, Any], reporter: ApiReporter) -> tuple[dict[str, float], str | None, float]:
        trainer = self._trainer_lookup(lease["trainer"]["name"])
        config = trainer.config_model.model_validate(lease["trainer"]["params"])
        study_id, trial_id, attempt = lease["study_id"], lease["trial_id"], lease["attempt"]
        checkpoint_in = self._own_checkpoint(lease["checkpoint_in"], study_id, trial_id)
        # One folder per lease attempt (F8): if this lease is lost while the trainer runs (a freeze,
        # a partition), the trial is requeued as a later attempt, so a late commit of ours cannot
        # replace the checkpoint that the new holder committed and the server recorded.
        out_dir = self.store.open_for_write(study_id, trial_id, lease["budget_to"], attempt=attempt)
        request = TrainRequest(
            trial_id=trial_id, params=lease["params"], config=config,
            budget_from=lease["budget_from"], budget_to=lease["budget_to"],
            checkpoint_in=checkpoint_in, checkpoint_out=out_dir,
            seed=lease["seed"], extra={"attempt": attempt},
        )
        try:
            result = trainer.train(request, reporter)
            reporter.flush(deliver=True)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)  # an unfinished checkpoint is never committed
            raise
        uri = None
        if result.wrote_checkpoint:
            # Named by the budget actually trained: an early stop at 4 of 9 is stored as budget 4.
            uri = self.store.commit(out_dir, study_id, trial_id, result.budget_done, attempt=attempt)
        return result.metrics, uri, result.budget_done

    def _own_checkpoint(self, uri: str | None, study_id: int, trial_id: int) -> Path | None:
        """The local folder of the trial's checkpoint to resume from. A worker token can report any
        URI of the store as its trial's checkpoint (a bug, or on purpose); resuming from another
        trial's weights would train a configuration that is not this trial's and score it as this
        one, so a checkpoint committed by another trial is unusable (the server falls back to an
        earlier one, or restarts the trial from scratch)."""
        if not uri:
            return None
        owner = self.store.owner(uri)
        if owner != (study_id, trial_id):
            raise CheckpointError(f"{uri} was committed by trial {owner[1]} of study {owner[0]}, "
                                  f"not by trial {trial_id} of study {study_id}")
        return Path(self.store.fetch(uri))

    def _deliver(self, lease: dict[str, Any], what: str, call: Callable[[], object]) -> None:
        """``call`` (the slice's completion or failure), retried while the server is unreachable
        (a restart, a failover) until the worker stops; then ServiceUnavailable.

        Giving up would leave the trial to lease expiry: a completed slice trained again, and
        either way one of the trial's attempts used up. Waiting is safe: the restarted server
        extends the leases in flight, the token fences a call that comes too late (409), and a
        repeated completion returns the stored state.
        """
        # No heartbeat runs now: a restarted server gives the lease lease_seconds from its start,
        # so the waits stay well inside that, or the call would come after the expiry.
        cap = max(self.unreachable_wait_s, min(UNREACHABLE_MAX_WAIT_S, lease["lease_seconds"] / 3))
        backoff = Backoff(self.unreachable_wait_s, cap)
        while True:
            try:
                call()
                return
            except ServiceUnavailable as error:
                wait_s = backoff.next()
                log.warning("trial %s: server unreachable, %s retried in %.0f s: %s",
                            lease["trial_id"], what, wait_s, error)
                if self.stop.wait(wait_s):
                    raise

    def _release(self, lease: dict[str, Any], checkpoint_uri: str | None, budget_done: float) -> None:
        """Drained mid-slice: give the trial back as retryable, with the checkpoint the trainer wrote
        on its way out when it lies inside the slice, so that the retry trains only the rest."""
        trial_id, token, error = lease["trial_id"], lease["lease_token"], "worker is shutting down"
        if checkpoint_uri is None or not lease["budget_from"] < budget_done < lease["budget_to"]:
            log.info("trial %s: drained at budget %g of %g without a checkpoint to keep; released as retryable",
                     trial_id, budget_done, lease["budget_to"])
            self._release_drained(trial_id, token, error)
            return
        try:
            self.client.fail(trial_id, token, error, retryable=True, checkpoint_out=checkpoint_uri,
                             budget_done=budget_done, drained=True)
        except InvalidInput as refused:  # e.g. a server that predates partial checkpoints
            log.warning("trial %s: the server refused the partial checkpoint (%s); released without it",
                        trial_id, refused)
            self._release_drained(trial_id, token, error)
            return
        log.info("trial %s: drained at budget %g of %g; released as retryable with its checkpoint %s",
                 trial_id, budget_done, lease["budget_to"], checkpoint_uri)

    def _release_drained(self, trial_id: int, token: str, error: str) -> None:
        """A drain's release, without a checkpoint; marked as a drain (it does not use up one of the
        trial's attempts), or as a plain retryable failure for a server that predates the mark."""
        try:
            self.client.fail(trial_id, token, error, retryable=True, drained=True)
        except InvalidInput:
            self.client.fail(trial_id, token, error, retryable=True)

    def _fail(self, lease: dict[str, Any], error: str, *, retryable: bool, checkpoint_invalid: bool = False) -> None:
        log.warning("trial %s failed (%s): %s", lease["trial_id"], "retryable" if retryable else "final",
                    error.strip().splitlines()[-1] if error.strip() else error)
        try:
            self._deliver(lease, "its failure", lambda: self.client.fail(
                lease["trial_id"], lease["lease_token"], error, retryable=retryable,
                checkpoint_invalid=checkpoint_invalid))
        except Conflict:
            pass  # the lease was lost meanwhile; the server has already requeued the trial
        except ServiceUnavailable as unreachable:  # stopped while the server was away
            log.error("trial %s: server unreachable, leaving the trial to lease expiry: %s",
                      lease["trial_id"], unreachable)
        except HpoError as rejected:  # it must not end the worker: the lease expires and requeues the trial
            log.error("trial %s: the server rejected the failure report: %s", lease["trial_id"], rejected)
