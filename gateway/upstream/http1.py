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
from urllib.parse import urlsplit

from gateway.upstream.http1_connection import Connection as _Connection
from gateway.upstream.http1_connection import HttpError, LimitExceeded, Limits, StaleConnection

__all__ = ["Body", "HttpError", "LimitExceeded", "Limits", "Origin", "Pool", "Response"]
# Inflate a compressed body in pieces of at most this size, yielding to the event loop between them.
_INFLATE_PIECE = 64 * 1024
# A body read faster than it is processed never waits for the socket, so its reader would keep the
# event loop to itself; it yields after each this many bytes, and other requests get their turn.
_YIELD_EVERY = 64 * 1024
_YIELD_EVERY_LINES = 256  # the same for lines: one piece of a body may hold thousands of events


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

    @property
    def limited(self) -> bool:
        """The body limit still applies (it is lifted for a stream served live)."""
        return self._connection.body_limit is not None

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
        if self._inflate is not None:
            return b"".join([piece async for piece in self._pieces(None)])
        # Plain bodies skip the async generator: a small answer is usually whole by now, and this
        # runs on every tier call. The same yielding as `_pieces`.
        connection = self._connection
        parts: list[bytes] = []
        unyielded = 0
        while (raw := await connection.next_chunk()) is not None:
            parts.append(raw)
            unyielded += len(raw)
            if unyielded > _YIELD_EVERY:
                unyielded = 0
                await asyncio.sleep(0)
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
                 limits: Limits | None = None) -> None:
        self.origin = Origin.parse(base_url)
        self.limits = limits or Limits()
        self._keepalive_s = keepalive_s
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._ssl = (ssl_context or ssl.create_default_context()) if self.origin.tls else None
        fixed = "".join([f"{k}: {v}\r\n" for k, v in (headers or {}).items()])
        fixed.encode("latin-1")  # refused here, at construction, rather than on the first request
        self._fixed = fixed
        self._closed = False

    def _request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        extra = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
        # One string, encoded once: the head is rebuilt for every tier call.
        return (f"{method} {self.origin.prefix}/{path} HTTP/1.1\r\nhost: {self.origin.host_header}\r\n"
                f"content-length: {len(body)}\r\n{self._fixed}{extra}\r\n").encode("latin-1") + body

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
                except StaleConnection:
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
