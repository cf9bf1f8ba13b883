"""Live updates for the dashboard: one poll per second per server, shared by every open page.

`LiveHub` polls ``DashboardService.heads`` (one indexed query: newest report and
decision id, the studies' and workers' last change, the watched studies' versions)
once a second, and only while someone is watching. When a watched study may have
changed it reads the new reports and decisions once and fans them out to every
subscriber of that study. A quiet page therefore costs one tiny query per second
per server, whatever the number of open pages; no page costs anything when none
is open.

Ids come from sequences, so a transaction may commit a smaller id after a larger
one was seen: each topic re-reads one poll behind the newest id it has seen and
skips ids it already sent. Delivery is at-least-once; pages ignore repeats (reports
are unique per (trial, step), decisions by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.sse import ServerSentEvent

from hpo_service.orchestration.dashboard import DashboardService
from hpo_service.orchestration.dashboard_views import Changes, Heads

log = logging.getLogger("hpo_service.dashboard")
EVERYTHING = 0  # the topic of the studies list and the workers page
BATCH = 500  # more new events than this in one poll: the page reloads its data instead
RETRY_MS = 1000


@dataclass
class _Topic:
    queues: set[asyncio.Queue[ServerSentEvent]] = field(default_factory=set)
    report_mark: int = 0  # every report id <= mark was published (or predates the topic)
    decision_mark: int = 0
    seen_report: int = 0  # newest ids seen by the previous poll
    seen_decision: int = 0
    sent: set[tuple[str, int]] = field(default_factory=set)  # ids above the marks already published
    state: Any = None  # last (version, status), or the global change stamps

    def cursor(self) -> str:
        return f"{self.seen_report}.{self.seen_decision}"


async def _in_thread(function: Any, *args: Any) -> Any:
    """`run_in_threadpool` that cancelling (`LiveHub.close` at shutdown) does not abandon: the thread
    holds a database connection, which must be back in the pool before the server disposes of the
    engine -- else it is left open and only closed, with a ResourceWarning, by the garbage collector."""
    call = asyncio.ensure_future(run_in_threadpool(function, *args))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.wait([call])
        if not call.cancelled():
            call.exception()  # retrieved: a failure of the abandoned poll is not news at shutdown
        raise


class LiveHub:
    def __init__(self, dashboard: DashboardService, interval_s: float = 1.0) -> None:
        self._dashboard = dashboard
        self._interval = interval_s
        self._topics: dict[int, _Topic] = {}
        self._poller: asyncio.Task[None] | None = None
        self.polls = 0  # for tests and the benchmark: how many head queries ran

    async def stream(
        self, study_id: int, last_event_id: str | None, max_seconds: float
    ) -> AsyncIterator[ServerSentEvent]:
        """Events for one page until ``max_seconds`` pass (the browser then reconnects with
        Last-Event-ID, so that a server shutdown never waits on an open page)."""
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue(maxsize=256)
        topic = await self._subscribe(study_id, queue)
        try:
            yield ServerSentEvent(event="hello", data={"cursor": topic.cursor(), "interval_s": self._interval},
                                  id=topic.cursor(), retry=RETRY_MS)
            for event in await self._catch_up(study_id, topic, last_event_id):
                yield event
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max_seconds
            while (remaining := deadline - loop.time()) > 0:
                try:
                    yield await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
        finally:
            topic.queues.discard(queue)

    async def _subscribe(self, study_id: int, queue: asyncio.Queue[ServerSentEvent]) -> _Topic:
        if study_id not in self._topics:
            heads = await run_in_threadpool(self._dashboard.heads, [study_id] if study_id else [])
            if study_id not in self._topics:  # nobody else created it while we read
                self._topics[study_id] = _Topic(
                    report_mark=heads.report_id, decision_mark=heads.decision_id, seen_report=heads.report_id,
                    seen_decision=heads.decision_id, state=self._state_of(study_id, heads))
        topic = self._topics[study_id]
        topic.queues.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="dashboard-live-poll")
        return topic

    async def _catch_up(self, study_id: int, topic: _Topic, last_event_id: str | None) -> list[ServerSentEvent]:
        """A reconnecting page gets what it missed since its Last-Event-ID (or a resync)."""
        if not study_id or not last_event_id:
            return []
        try:
            report, decision = (int(part) for part in last_event_id.split(".", 1))
        except ValueError:
            return [self._event("resync", {"reason": "unreadable Last-Event-ID"}, topic)]
        if report >= topic.seen_report and decision >= topic.seen_decision:
            return []
        changes = await run_in_threadpool(self._dashboard.changes, study_id, report, decision, BATCH)
        if changes.more:
            return [self._event("resync", {"reason": "too much happened while disconnected"}, topic)]
        return self._change_events(changes, topic)

    async def _poll(self) -> None:
        while any(t.queues for t in self._topics.values()):
            try:
                await self._tick()
            except Exception:  # a database hiccup must not end live updates for good
                log.exception("dashboard live poll failed; retrying")
            await asyncio.sleep(self._interval)
        self._topics = {k: t for k, t in self._topics.items() if t.queues}

    async def _tick(self) -> None:
        for study_id in [k for k, t in self._topics.items() if not t.queues]:
            del self._topics[study_id]
        self.polls += 1
        heads = await _in_thread(self._dashboard.heads, [k for k in self._topics if k])
        for study_id, topic in list(self._topics.items()):
            state = self._state_of(study_id, heads)
            if state != topic.state:
                topic.state = state
                # The global topic says only that something changed: its stamps span every project.
                data = (state or {"gone": True}) if study_id else {}
                self._publish(topic, self._event("study" if study_id else "changed", data, topic))
            if study_id and (heads.report_id > topic.report_mark or heads.decision_id > topic.decision_mark):
                changes = await _in_thread(
                    self._dashboard.changes, study_id, topic.report_mark, topic.decision_mark, BATCH)
                self._deliver(topic, changes, heads)
            # Everything up to what the previous poll saw has committed by now: stop re-reading it.
            topic.report_mark, topic.decision_mark = topic.seen_report, topic.seen_decision
            topic.sent = {(k, i) for k, i in topic.sent if i > (topic.report_mark if k == "r" else topic.decision_mark)}
            topic.seen_report, topic.seen_decision = heads.report_id, heads.decision_id

    def _deliver(self, topic: _Topic, changes: Changes, heads: Heads) -> None:
        if changes.more:
            topic.seen_report, topic.seen_decision = heads.report_id, heads.decision_id
            topic.sent.clear()
            self._publish(topic, self._event("resync", {"reason": "more than one batch of new events"}, topic))
            return
        for event in self._change_events(changes, topic):
            self._publish(topic, event)

    def _change_events(self, changes: Changes, topic: _Topic) -> list[ServerSentEvent]:
        reports = [r for r in changes.reports if ("r", r["id"]) not in topic.sent]
        decisions = [d for d in changes.decisions if ("d", d.id) not in topic.sent]
        topic.sent.update(("r", r["id"]) for r in reports)
        topic.sent.update(("d", d.id) for d in decisions)
        events = []
        if reports:
            events.append(self._event("reports", reports, topic))
        if decisions:
            events.append(self._event("decisions", [asdict(d) for d in decisions], topic))
        return events

    @staticmethod
    def _state_of(study_id: int, heads: Heads) -> Any:
        if not study_id:
            return {"studies_changed_at": heads.studies_changed_at, "studies": heads.studies,
                    "workers_seen_at": heads.workers_seen_at}
        version = heads.versions.get(study_id)
        return None if version is None else {"version": version[0], "status": version[1]}

    @staticmethod
    def _event(kind: str, data: Any, topic: _Topic) -> ServerSentEvent:
        return ServerSentEvent(event=kind, data=jsonable_encoder(data), id=topic.cursor())

    @staticmethod
    def _publish(topic: _Topic, event: ServerSentEvent) -> None:
        for queue in list(topic.queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a page that does not read: it reloads instead
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        queue.get_nowait()
                queue.put_nowait(ServerSentEvent(event="resync", data={"reason": "fell behind"}))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
