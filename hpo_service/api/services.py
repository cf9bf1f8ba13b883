"""The use cases an API process serves, wired once per app."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.orchestration.access import AccessService
from hpo_service.orchestration.context import Context
from hpo_service.orchestration.protocol import TrialProtocol
from hpo_service.orchestration.studies import StudyService
from hpo_service.settings import Settings


class WorkSignal:
    """Wakes long-polling lease requests when this process sees new work.

    `notify` is called from worker threads (the use cases run in the thread
    pool); waiters live on the event loop. Other API processes' work is found
    by the poll interval instead.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        if event is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


@dataclass
class Services:
    context: Context
    studies: StudyService
    protocol: TrialProtocol
    access: AccessService
    signal: WorkSignal
    _last_sweep: float = 0.0
    _sweep_lock: threading.Lock = field(default_factory=threading.Lock)

    def sweep_due(self) -> bool:
        """Whether `expire_leases_throttled` would sweep now (cheap: callers on the event loop ask first)."""
        return time.monotonic() - self._last_sweep >= self.context.settings.expiry_sweep_seconds

    def expire_leases_throttled(self) -> None:
        """Sweep expired leases at most once per `expiry_sweep_seconds` in this process."""
        if not self.sweep_due() or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._last_sweep = time.monotonic()
            self.protocol.expire_leases()
        finally:
            self._sweep_lock.release()

    def close(self) -> None:
        self.context.engine.dispose()


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.database_url)
    signal = WorkSignal()
    context = Context(engine=engine, sessions=make_session_factory(engine), settings=settings,
                      on_work_available=signal.notify)
    return Services(context, StudyService(context), TrialProtocol(context), AccessService(context), signal)
