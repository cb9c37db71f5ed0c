"""A small HTTP/1.1 client for the tiers: a keep-alive connection pool over asyncio and httptools.

Why not aiohttp: the client's CPU per call is paid on every tier call, and this one costs a
fraction of aiohttp's (`python -m bench.client_cost`; numbers in bench/NOTES.md).
Its scope is what a tier needs: POST with a body, Content-Length / chunked / read-until-close
responses, streamed bodies, TLS, keep-alive reuse. No proxies, cookies or redirects; a compressed
answer is inflated although we never ask for one.

A tier is somebody else's server, so everything it sends is bounded (`Limits`): the header section
in bytes and fields, the body on the wire and after inflation, one line of a line-read body.
Crossing a bound raises LimitExceeded at once; nothing past the bound is kept.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

# Stop reading a stream's socket while this much is buffered and unread: the tier waits for us.
_STREAM_HIGH_WATER = 1 << 20
# Inflate a compressed body in pieces of at most this size, yielding to the event loop between them.
_INFLATE_PIECE = 64 * 1024
# A body read faster than it is processed never waits for the socket, so its reader would keep the
# event loop to itself; it yields after each this many bytes, and other requests get their turn.
_YIELD_EVERY = 64 * 1024
_YIELD_EVERY_LINES = 256  # the same for lines: one piece of a body may hold thousands of events


class HttpError(Exception):
    """The exchange failed below HTTP: refused or reset connection, cut response, broken framing."""


class _Stale(HttpError):
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


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a base URL points: scheme, host, port, path prefix and the Host header."""

    tls: bool
    host: str
    port: int
    prefix: str
    host_header: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = port == (443 if tls else 80)
        return cls(tls, host, port, parts.path.rstrip("/"), shown if default else f"{shown}:{port}")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


class _Connection(asyncio.Protocol):
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
                            else _Stale(f"connection closed before an answer: {exc or 'by the server'}"))
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
        if self._buffered > _STREAM_HIGH_WATER and self.transport is not None and not self._paused:
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
        if self._paused and self._buffered <= _STREAM_HIGH_WATER // 2 and self.transport is not None:
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
        self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # marked retrieved: the waiter may already be gone (timeout)
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class Body:
    """An answer whose body is read as it arrives. Release it (or close it) exactly once."""

    def __init__(self, pool: Pool, connection: _Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers
        encoding = self.headers.get("content-encoding", "identity").lower()
        self._inflate = zlib.decompressobj(wbits=47) if encoding in ("gzip", "deflate", "x-gzip") else None
        self._inflated_bytes = 0
        self._released = False

    @property
    def at_eof(self) -> bool:
        return self._connection.complete and not self._connection._chunks

    def lift_body_limit(self) -> None:
        """Stop counting body bytes: the rest is served live and bounded in time by the caller."""
        self._connection.body_limit = None

    async def _pieces(self, read_timeout_s: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives, inflated when compressed; each wait bounded by `read_timeout_s`."""
        connection = self._connection
        unyielded = 0
        while True:
            if read_timeout_s is None:
                raw = await connection.next_chunk()
            else:
                async with asyncio.timeout(read_timeout_s):
                    raw = await connection.next_chunk()
            if raw is not None:
                unyielded += len(raw)
                if unyielded > _YIELD_EVERY:
                    unyielded = 0
                    await asyncio.sleep(0)
            if self._inflate is None:
                if raw is None:
                    return
                yield raw
                continue
            async for piece in self._inflated(raw):
                yield piece
            if raw is None:
                return

    async def _inflated(self, chunk: bytes | None) -> AsyncIterator[bytes]:
        """A piece of a compressed body inflated in bounded steps; None, its end. Broken, cut short
        or inflating past the limit: HttpError, which callers handle, not zlib.error."""
        inflate = self._inflate
        assert inflate is not None
        pending = chunk if chunk is not None else b""
        try:
            while True:
                piece = inflate.decompress(pending, _INFLATE_PIECE)
                pending = inflate.unconsumed_tail
                if piece:
                    self._inflated_bytes += len(piece)
                    limit = self._connection.body_limit
                    if limit is not None and self._inflated_bytes > limit:
                        raise LimitExceeded(f"inflated body over the limit of {limit} bytes")
                    yield piece
                if not pending:
                    break
                await asyncio.sleep(0)  # a bomb must not hold the event loop
            if chunk is None:
                rest = inflate.flush()
                if not inflate.eof:
                    raise HttpError("compressed body cut short")
                if rest:
                    yield rest
        except zlib.error as exc:
            raise HttpError(f"broken compressed body: {exc}") from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces(None):
            yield piece

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = [chunk async for chunk in self._pieces(None)]
        return b"".join(parts)

    async def lines(self, read_timeout_s: float | None,
                    max_line_bytes: int | None = None) -> AsyncIterator[bytes]:
        """The body split at b"\\n" (each line with its ending), each wait bounded by `read_timeout_s`;
        a line longer than `max_line_bytes` (default: the pool's line limit) raises LimitExceeded."""
        limit = self._connection.limits.line_bytes if max_line_bytes is None else max_line_bytes
        parts: list[bytes] = []  # the unfinished line, joined only once it ends (no quadratic copying)
        size = 0
        async for chunk in self._pieces(read_timeout_s):
            if b"\n" not in chunk:
                size += len(chunk)
                if size > limit:
                    raise LimitExceeded(f"a line over {limit} bytes")
                parts.append(chunk)
                continue
            first, *middle, rest = chunk.split(b"\n")
            parts.append(first)
            if size + len(first) > limit:
                raise LimitExceeded(f"a line over {limit} bytes")
            yield b"".join(parts) + b"\n"
            for number, line in enumerate(middle, 1):
                if len(line) > limit:
                    raise LimitExceeded(f"a line over {limit} bytes")
                yield line + b"\n"
                if number % _YIELD_EVERY_LINES == 0:
                    await asyncio.sleep(0)  # each line is work for the reader: let others in between
            parts, size = ([rest], len(rest)) if rest else ([], 0)
            if size > limit:
                raise LimitExceeded(f"a line over {limit} bytes")
        if parts:
            yield b"".join(parts)

    def release(self) -> None:
        """Hand the connection back: to the pool if the answer was read to its end, else closed."""
        if self._released:
            return
        self._released = True
        self._pool._give_back(self._connection)


class Pool:
    """Keep-alive connections to one origin, at most `limit` in use at once."""

    def __init__(self, base_url: str, *, limit: int, headers: Mapping[str, str] | None = None,
                 keepalive_s: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                 limits: Limits = Limits()) -> None:
        self.origin = Origin.parse(base_url)
        self.limits = limits
        self._keepalive_s = keepalive_s
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._ssl = (ssl_context or ssl.create_default_context()) if self.origin.tls else None
        self._fixed = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
        self._closed = False

    def _request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        extra = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        head = (f"{method} {self.origin.prefix}/{path} HTTP/1.1\r\nhost: {self.origin.host_header}\r\n"
                f"content-length: {len(body)}\r\n").encode("latin-1")
        return head + self._fixed + extra + b"\r\n" + body

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.limits), self.origin.host, self.origin.port, ssl=self._ssl,
                server_hostname=self.origin.host if self._ssl else None)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.origin.host}:{self.origin.port}: {exc}") from exc
        return connection

    def _reusable_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used one is the likeliest alive
            if not connection.closed and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.close()
        return None

    async def open(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Body:
        """Send a request and wait for the answer's head; the caller reads the body and releases it.

        The caller bounds the wait (asyncio.timeout); if it gives up, the connection is closed.
        """
        if self._closed:
            raise HttpError("client is closed")
        request = self._request(method, path, body, headers)
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            connection = self._reusable_idle()
            if connection is not None:
                try:
                    await connection.begin(request)
                    return Body(self, connection)
                except _Stale:
                    connection.close()  # the server dropped it while idle; it never saw this request
            connection = await self._connect()
            await connection.begin(request)
            return Body(self, connection)
        except BaseException:
            if connection is not None:
                connection.close()
            self._slots.release()
            raise

    async def send(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """One whole exchange: status, headers and the full body."""
        answer = await self.open(method, path, body, headers)
        try:
            content = await answer.read()
        finally:
            answer.release()
        return Response(answer.status, answer.headers, content)

    def _give_back(self, connection: _Connection) -> None:
        self._slots.release()
        connection.finish()
        if connection.complete and connection.reusable and not connection.closed and not self._closed:
            self._idle.append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def idle_connections(self) -> int:
        return sum(1 for c in self._idle if not c.closed)
