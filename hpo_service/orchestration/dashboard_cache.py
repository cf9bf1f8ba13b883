"""What the dashboard's use cases keep between requests: computed views, background work."""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from hpo_service.orchestration.dashboard_history import HistoryLog
from hpo_service.orchestration.dashboard_rungs import RungLedger

T = TypeVar("T")
log = logging.getLogger("hpo_service.dashboard")


class VersionCache:
    """An LRU of computed views, each valid for one stamp (e.g. the study version) or, whatever
    the stamp, for ``max_age_s`` after it was computed."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: OrderedDict[Hashable, tuple[Hashable, float, Any]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: Hashable, stamp: Hashable, max_age_s: float, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry[0] == stamp or now - entry[1] < max_age_s):
                self._entries.move_to_end(key)
                return entry[2]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._entries[key] = (stamp, now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value

    def peek(self, key: Hashable) -> tuple[Hashable, float, Any] | None:
        """(stamp, computed at, value) of ``key``, if cached."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: Hashable, stamp: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = (stamp, time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def history_log(self, study_id: int) -> HistoryLog:
        return self.get(("history-log", study_id), None, math.inf, HistoryLog)

    def rung_ledger(self, study_id: int) -> RungLedger:
        return self.get(("rung-ledger", study_id), None, math.inf, RungLedger)


class Background:
    """Model fits, once per key at a time, in a worker process: a fit in pure Python on a thread
    of the API process would hold its interpreter and stall every request meanwhile."""

    def __init__(self) -> None:
        self._busy: set[Hashable] = set()
        self._busy_lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _claim(self, key: Hashable) -> bool:
        with self._busy_lock:
            if key in self._busy:
                return False
            self._busy.add(key)
            return True

    def _release(self, key: Hashable) -> None:
        with self._busy_lock:
            self._busy.discard(key)

    def fit(self, key: tuple[Any, ...], function: Callable[..., T], args: tuple[Any, ...],
            done: Callable[[T | None, BaseException | None], None]) -> None:
        """``function(*args)`` in the worker process (started on first use); then ``done(result, error)``."""
        if not self._claim(key):
            return
        with self._busy_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool

        def finished(future: Future[T]) -> None:
            try:
                error = future.exception()
                done(None if error else future.result(), error)
            except Exception:
                log.exception("finishing %s failed", key)
            finally:
                self._release(key)

        pool.submit(function, *args).add_done_callback(finished)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
