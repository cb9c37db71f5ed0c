"""A small HTTP/1.1 client for the tiers: a keep-alive connection pool over asyncio and httptools.

Why not aiohttp: measured on this machine, one aiohttp POST to a local tier costs about 110 µs of
CPU and this client about 15 µs (bench/NOTES.md), and the gateway pays it on every tier call.
Its scope is what a tier needs: POST with a body, Content-Length / chunked / read-until-close
responses, streamed bodies, TLS, keep-alive reuse. No proxies, cookies or redirects; a compressed
answer is inflated although we never ask for one.
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


class HttpError(Exception):
    """The exchange failed below HTTP: refused or reset connection, cut response, broken framing."""


class _Stale(HttpError):
    """A reused keep-alive connection died before any answer byte: the request may be sent again."""


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

    def __init__(self) -> None:
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
            if not self._complete:  # else the answer is whole; only what follows it is bad
                self._fail(HttpError(f"malformed HTTP answer: {exc}"))
            self._abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            # More bytes after the answer in the same read: a second answer nobody asked for. Stop the
            # parser here (it raises HttpParserCallbackError) before it appends to this answer's body.
            raise HttpError("bytes after the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"  # repeated field: RFC 9110 §5.3

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._until_close = "content-length" not in self._headers and "chunked" not in self._headers.get(
            "transfer-encoding", "").lower()
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _STREAM_HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
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
        self._released = False

    @property
    def at_eof(self) -> bool:
        return self._connection.complete and not self._connection._chunks

    def _inflated(self, chunk: bytes | None) -> bytes:
        """A piece of a compressed body inflated; None, its end. Broken or cut short: HttpError, which
        callers handle, not zlib.error, which they would not."""
        inflate = self._inflate
        assert inflate is not None
        try:
            if chunk is not None:
                return inflate.decompress(chunk)
            rest = inflate.flush()
        except zlib.error as exc:
            raise HttpError(f"broken compressed body: {exc}") from exc
        if not inflate.eof:
            raise HttpError("compressed body cut short")
        return rest

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._connection.next_chunk()) is not None:
            yield self._inflated(chunk) if self._inflate is not None else chunk
        if self._inflate is not None:
            yield self._inflated(None)

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def lines(self, read_timeout_s: float | None) -> AsyncIterator[bytes]:
        """The body split at b"\\n" (each line with its ending), each wait bounded by `read_timeout_s`."""
        pending = b""
        connection = self._connection
        ended = False
        while not ended:
            if read_timeout_s is None:
                raw = await connection.next_chunk()
            else:
                async with asyncio.timeout(read_timeout_s):
                    raw = await connection.next_chunk()
            ended = raw is None
            chunk = self._inflated(raw) if self._inflate is not None else raw or b""
            pending += chunk
            if b"\n" not in chunk:
                continue
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line + b"\n"
        if pending:
            yield pending

    def release(self) -> None:
        """Hand the connection back: to the pool if the answer was read to its end, else closed."""
        if self._released:
            return
        self._released = True
        self._pool._give_back(self._connection)


class Pool:
    """Keep-alive connections to one origin, at most `limit` in use at once."""

    def __init__(self, base_url: str, *, limit: int, headers: Mapping[str, str] | None = None,
                 keepalive_s: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.origin = Origin.parse(base_url)
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
                _Connection, self.origin.host, self.origin.port, ssl=self._ssl,
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
