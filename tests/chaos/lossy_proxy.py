"""A TCP proxy in front of an API server that loses answers: the request is served, its response is not.

Workers talk to the proxy. For each chunk of a server's answer it relays, it may instead cut both
connections (probability by the path of the request being answered): the server has done the work
(granted the lease, stored the report, recorded the completion) and the worker sees a reset or a
truncated response, so the SDK retries. This is the failure the protocol's retry rules exist for
(lease Idempotency-Keys, repeated reports and completions as no-ops); killing processes does not
produce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
from collections import Counter

from tests.chaos.cluster import free_port

_REQUEST_LINE = re.compile(rb"^(?:GET|POST|PATCH|PUT|DELETE) (/\S*) HTTP/1\.[01]\r\n")
_CHUNK = 65536


def kind_of(path: str) -> str:
    """``leases``, ``reports``, ``complete``, ``heartbeat``, ``fail`` or ``other``."""
    last = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return last if last in ("leases", "reports", "complete", "heartbeat", "fail") else "other"


class LossyProxy(threading.Thread):
    def __init__(self, upstream_port: int, cut_probability: dict[str, float], seed: int) -> None:
        """``cut_probability``: by request kind (``kind_of``, and ``lease grant`` for a lease answered
        with a trial), the chance that a chunk of its answer is cut instead of relayed."""
        super().__init__(daemon=True, name=f"lossy-proxy-{upstream_port}")
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut_probability = cut_probability
        self.rng = random.Random(seed)
        self.cut: Counter[str] = Counter()  # answers lost, by request kind
        self.cut_at: list[tuple[float, str]] = []  # (time.time(), kind) of each cut
        self.relayed: Counter[str] = Counter()  # answers (their first chunk) relayed, by request kind
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_serving(self) -> str:
        self.start()
        if not self._ready.wait(10):
            raise RuntimeError("the lossy proxy did not start")
        return self.url

    def stop(self) -> None:
        """Stop listening, cut every open connection and end the thread."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self.join(timeout=10)

    def run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            loop.run_until_complete(self._server.serve_forever())
        except asyncio.CancelledError:
            pass  # server.close() ends serve_forever
        finally:
            # The workers keep their connections open: end each one's pumps (closing its sockets).
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            return
        pending: list[str] = []  # kinds of the requests sent on this connection, not yet answered
        pumps = [asyncio.ensure_future(self._requests(client_in, server_out, pending)),
                 asyncio.ensure_future(self._answers(server_in, client_out, pending))]
        try:
            # A cut (an exception) ends both directions at once; an end of stream ends its own.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: end this connection like any other (asyncio would log a cancelled one)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)  # a cut is the point, not an error
            for writer in (client_out, server_out):
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()

    async def _requests(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pending: list[str]) -> None:
        while data := await source.read(_CHUNK):
            match = _REQUEST_LINE.match(data)
            if match:  # the SDK sends one request at a time per connection, each starting a chunk
                pending.append(kind_of(match.group(1).decode("latin-1")))
            sink.write(data)
            await sink.drain()
        sink.close()

    async def _answers(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pending: list[str]) -> None:
        kind = "other"  # of the request whose answer is being relayed
        while data := await source.read(_CHUNK):
            starts_an_answer = data.startswith(b"HTTP/1.")
            if starts_an_answer:
                kind = pending.pop(0) if pending else "other"
                if kind == "leases" and data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    kind = "lease grant"  # a trial was leased (a 204 says none came within the wait)
            if self.rng.random() < self.cut_probability.get(kind, 0.0):
                self.cut[kind] += 1
                self.cut_at.append((time.time(), kind))
                raise ConnectionResetError(f"lossy proxy cut the answer to a {kind} request")
            if starts_an_answer:
                self.relayed[kind] += 1
            sink.write(data)
            await sink.drain()
        sink.close()
