"""Input limits of the REST API: the request body size, and bounded types for ids and text.

`BodySizeLimit` is a plain ASGI middleware (it sees the bytes before FastAPI parses
anything). A request whose ``Content-Length`` is over the limit is refused at once,
without reading the body; a body sent without a length (chunked) is read up to the
limit and refused as soon as it passes it (it is then handed to the app from memory). Either way the answer is HTTP 413 with the
service's error shape::

    {"error": "payload_too_large", "message": "the request body is over the limit of 1 MiB ..."}

Wire it in `create_app`::

    app.add_middleware(BodySizeLimit, max_bytes=DEFAULT_MAX_BODY_BYTES)

The types below bound what reaches the database: PostgreSQL refuses integers past
64 bits and text holding NUL characters with a `DataError`, which would otherwise
surface as HTTP 500. Used in route signatures and request schemas, they turn such
input into a 422 that names the field.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field

from hpo_service.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # a study spec or a batch of 1000 reports is far below this
# Ids, offsets, `after_id`: within BIGINT, and within what a JSON number holds exactly (2**53 - 1,
# JavaScript's Number.MAX_SAFE_INTEGER). The bound must also survive the OpenAPI document, where
# FastAPI writes a body's bounds as floats: 2**63 - 1 would be documented as 2**63, past the column,
# and near 2**63 a double's steps are 1024 wide, so clients (and fuzzers) cannot hit it exactly.
MAX_DB_ID = 2**53 - 1
MAX_DB_INT = 2**31 - 1  # INTEGER columns: bracket, rung, attempt


def _describe_bytes(count: int) -> str:
    if count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    if count % 1024 == 0:
        return f"{count // 1024} KiB"
    return f"{count} bytes"


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with HTTP 413 (before any parsing)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"the request body ({declared} bytes) is over")
            return
        if declared is not None:
            # A declared length within the limit: the server reads exactly that many bytes.
            await self.app(scope, receive, send)
            return
        # No length (chunked, HTTP/2, or no body at all): count what arrives.
        buffered, too_large = await self._read_body(receive)
        if too_large:
            await self._refuse(send, "the request body is over")
            return
        await self.app(scope, _replay(buffered, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[list[Message], bool]:
        """Read a streamed body up to the limit; stop reading as soon as it is passed."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False  # the client went away; the app sees the disconnect
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return messages, True
            if not message.get("more_body", False):
                return messages, False

    async def _refuse(self, send: Send, what: str) -> None:
        message = (f"{what} the limit of {_describe_bytes(self.max_bytes)}; send less data "
                   "(fewer reports per batch, a smaller search space or spec)")
        body = json.dumps({"error": PayloadTooLarge.code, "message": message}).encode()
        await send({
            "type": "http.response.start", "status": PayloadTooLarge.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we are called
    return None


def _replay(buffered: list[Message], receive: Receive) -> Receive:
    pending = list(buffered)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()  # after the body: http.disconnect when the client leaves

    return replayed


# --- bounded input types ------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    return value


def _no_control(value: str) -> str:
    bad = sorted({f"U+{ord(ch):04X}" for ch in value if unicodedata.category(ch) == "Cc"})
    if bad:
        raise ValueError(f"must not contain control characters ({', '.join(bad[:5])})")
    return value


def _hostname_is_text(resources: dict[str, Any]) -> dict[str, Any]:
    hostname = resources.get("hostname")
    if hostname is not None:
        if not isinstance(hostname, str) or len(hostname) > 255:
            raise ValueError("hostname must be a string of at most 255 characters")
        try:
            _no_control(hostname)
        except ValueError as error:
            raise ValueError(f"hostname {error}") from None
    return resources


def strip_nul(value: str) -> str:
    """For free text that workers send as is (tracebacks): keep it, minus what the database cannot store."""
    return value.replace("\x00", "\ufffd")


# Ids in paths and bodies: positive and within BIGINT, so a huge id is a 422, not a database error.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
IdItem = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_DB_ID)]
IndexQuery = Annotated[int | None, Query(ge=0, le=MAX_DB_INT)]  # bracket, rung
# The same rules as patterns in the OpenAPI schema, so clients (and fuzzers) can see them; the
# validators above give the clearer message.
NO_CONTROL_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
NO_NUL_PATTERN = "^[^\\u0000]*$"

# Names people and programs choose (worker ids, token names): any printable Unicode, no control characters.
NameText = Annotated[str, AfterValidator(_no_control), Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN})]
# Text stored verbatim (URIs, filters): anything but NUL, which PostgreSQL text cannot hold.
StoredText = Annotated[str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
# A worker's resources: free-form JSON, stored as is (a JSON column holds any string, NUL escapes
# included); only `hostname`, which is also stored in a text column, must be printable text.
WorkerResources = Annotated[dict[str, Any], AfterValidator(_hostname_is_text), Field(json_schema_extra={
    "properties": {"hostname": {"type": "string", "maxLength": 255, "pattern": NO_CONTROL_PATTERN}}})]
