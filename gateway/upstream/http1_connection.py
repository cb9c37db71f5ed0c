"""One keep-alive HTTP/1.1 connection to a tier, driven by httptools: the answer's head, its body as
it arrives (with backpressure), and the bounds on what the server may send (see gateway.upstream.http1)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

# Stop reading a stream's socket while this much is buffered and unread: the tier waits for us.
STREAM_HIGH_WATER = 1 << 20


class HttpError(Exception):
    """The exchange failed below HTTP: refused or reset connection, cut response, broken framing."""


class StaleConnection(HttpError):
    """A reused keep-alive connection died before any answer byte: the request may be sent again."""


class LimitExceeded(HttpError):
    """The answer crossed one of the configured bounds; the connection is dropped."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one answer. `body_bytes` holds on the wire and again after inflation."""

    header_bytes: int = 64 * 1024
    headers: int = 128
    body_bytes: int = 8 * 1024 * 1024
    line_bytes: int = 1024 * 1024


class Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time. httptools calls the on_* methods."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.body_limit: int | None = limits.body_bytes  # None: lifted for a stream served live
        self.transport: asyncio.Transport | None = None
        self.reusable = False  # the last answer completed and the server allows keep-alive
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._exchanging = False
        self._answered = False  # a byte of the current answer has arrived
        self._head: asyncio.Future[None] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self._complete = False
        self._error: HttpError | None = None
        self._until_close = False
        self._head_bytes = 0  # bytes received before the head was complete
        self._header_count = 0
        self._header_bytes = 0
        self._body_bytes = 0
        self._limit_error: LimitExceeded | None = None  # raised inside a parser callback

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if not self._exchanging or self._complete:
            return
        # A body without length ends where the connection does, but only at a clean close: a reset
        # may have discarded answer bytes the kernel had not handed over yet.
        if exc is None and self._until_close and self._head is not None and self._head.done():
            self.on_message_complete()
            return
        error: HttpError = (HttpError(f"connection closed mid-answer: {exc or 'by the server'}") if self._answered
                            else StaleConnection(f"connection closed before an answer: {exc or 'by the server'}"))
        self._fail(error)

    def data_received(self, data: bytes) -> None:
        if not self._exchanging or self._complete:
            self._abort()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._limit_error is not None:
                self._fail(self._limit_error)
            elif not self._complete:  # else the answer is whole; only what follows it is bad
                self._fail(HttpError(f"malformed HTTP answer: {exc}"))
            self._abort()
            return
        if self._head is not None and not self._head.done():
            # An endless header section (or one endless field) never completes a header callback.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.header_bytes:
                self._fail(LimitExceeded(f"header section over {self.limits.header_bytes} bytes"))
                self._abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            # More bytes after the answer in the same read: a second answer nobody asked for. Stop the
            # parser here (it raises HttpParserCallbackError) before it appends to this answer's body.
            raise HttpError("bytes after the answer")

    def _over_limit(self, message: str) -> LimitExceeded:
        self._limit_error = LimitExceeded(message)
        return self._limit_error

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.headers:
            raise self._over_limit(f"more than {self.limits.headers} header fields")
        if self._header_bytes > self.limits.header_bytes:
            raise self._over_limit(f"header section over {self.limits.header_bytes} bytes")
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"  # repeated field: RFC 9110 §5.3

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._interim:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._until_close = "content-length" not in self._headers and "chunked" not in self._headers.get(
            "transfer-encoding", "").lower()
        declared = self._headers.get("content-length", "")
        if self.body_limit is not None and declared.isdigit() and int(declared) > self.body_limit:
            raise self._over_limit(f"body of {declared} bytes is over the limit of {self.body_limit}")
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    @property
    def _interim(self) -> bool:
        # 101 is not interim: nobody asked to switch protocols, so it is the (unusable) answer.
        return 100 <= self._status < 200 and self._status != 101

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self.body_limit is not None and self._body_bytes > self.body_limit:
            raise self._over_limit(f"body over the limit of {self.body_limit} bytes")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > STREAM_HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
        if self._interim:
            self._headers, self._header_count, self._header_bytes = {}, 0, 0
            return
        self._complete = True
        self.reusable = not self._until_close and self._parser.should_keep_alive()
        self._notify()

    # used by the pool and the responses

    def begin(self, request: bytes) -> asyncio.Future[None]:
        """Send a request; the future resolves when the answer's head has arrived."""
        assert self.transport is not None
        self._exchanging, self._answered, self._complete, self._error = True, False, False, None
        self._status, self._headers, self._until_close = 0, {}, False
        self._chunks.clear()
        self._buffered = 0
        self._head_bytes = self._header_count = self._header_bytes = self._body_bytes = 0
        self._limit_error = None
        self.body_limit = self.limits.body_bytes
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._head

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def complete(self) -> bool:
        return self._complete

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None at its end. Raises HttpError if the answer breaks."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= STREAM_HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def finish(self) -> None:
        self._exchanging = False
        self.idle_since = time.monotonic()
        if self._paused and self.transport is not None and not self.closed:
            # Released with the body unread while reading was paused (the answer may still be whole):
            # an idle connection must read again, or its next answer and the server's FIN go unseen.
            self._chunks.clear()
            self._buffered = 0
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def _abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def _fail(self, error: HttpError) -> None:
        # The first failure is the cause: a limit crossed aborts the connection, and uvloop may report
        # the connection lost before the reader has seen the limit.
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(self._error)
            self._head.exception()  # marked retrieved: the waiter may already be gone (timeout)
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
