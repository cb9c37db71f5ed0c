"""Minimal HTTP/1.1 framing on asyncio streams, for test servers that must misbehave on purpose.

An ASGI server hides the socket; the scripted tier has to reset connections, send broken bodies
and stall mid-stream, so it speaks HTTP itself. Only what our clients send is supported:
Content-Length and chunked request bodies, keep-alive, `Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024


class ClientGone(Exception):
    """The peer closed or reset the connection."""


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.1 request this server understands."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Scripted"


class Connection:
    """One client connection. Keeps its own read buffer so a disconnect watcher can read ahead
    (to notice EOF while the server sleeps) without losing a pipelined next request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = bytearray()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def _fill(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except ConnectionError as exc:
            raise ClientGone from exc
        if not data:
            raise ClientGone
        self._buffer += data

    async def _read_until(self, separator: bytes, limit: int) -> bytes:
        start = 0
        while (index := self._buffer.find(separator, start)) < 0:
            if len(self._buffer) > limit:
                raise BadRequest("header section too large")
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._fill()
        if index > limit:
            raise BadRequest("header section too large")
        data = bytes(self._buffer[:index])
        del self._buffer[: index + len(separator)]
        return data

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection between requests."""
        # RFC 9112 §2.2: ignore empty lines before a request line.
        while self._buffer.startswith(b"\r\n"):
            del self._buffer[:2]
        if not self._buffer:
            try:
                await self._fill()
            except ClientGone:
                return None
        head = (await self._read_until(b"\r\n\r\n", MAX_HEAD_BYTES)).lstrip(b"\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            raise BadRequest(f"malformed request line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(f"malformed header line {line!r}")
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            self._writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(headers)
        return Request(parts[0], parts[1], parts[2], headers, body)

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked()
        length = headers.get("content-length")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise BadRequest(f"bad content-length {length!r}")
        return await self._read_exactly(int(length))

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self._read_until(b"\r\n", 1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(f"bad chunk size {size_line!r}") from None
            if size == 0:
                break
            body += await self._read_exactly(size)
            if await self._read_exactly(2) != b"\r\n" or len(body) > MAX_BODY_BYTES:
                raise BadRequest("bad chunk framing")
        while await self._read_until(b"\r\n", MAX_HEAD_BYTES):  # trailer fields, ignored
            pass
        return bytes(body)

    async def _wait_until_gone(self) -> None:
        with contextlib.suppress(ClientGone):
            while True:
                await self._fill()

    async def sleep_unless_gone(self, seconds: float) -> bool:
        """Sleep like a slow server; stop early and return False if the client disconnects,
        so a timed-out client does not leave a sleeping handler behind."""
        watcher = asyncio.ensure_future(self._wait_until_gone())
        try:
            done, _ = await asyncio.wait({watcher}, timeout=seconds)
            return not done
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})

    def _head(self, status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason(status)}", "server: scripted-tier"]
        lines += [f"{name}: {value}" for name, value in headers]
        if not keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ClientGone from exc

    async def send(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, keep_alive: bool
    ) -> None:
        head = self._head(status, [*headers, ("content-length", str(len(body)))], keep_alive)
        self._writer.write(head + body)
        await self._drain()

    def start_chunked(self, status: int, headers: list[tuple[str, str]], *, keep_alive: bool) -> None:
        self._writer.write(self._head(status, [*headers, ("transfer-encoding", "chunked")], keep_alive))

    async def send_chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the body
            self._writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            await self._drain()

    async def end_chunked(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._drain()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), the way a crashed server looks to its client."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    async def close(self) -> None:
        self._writer.close()
        # Let the transport release its socket now, not at garbage collection (ResourceWarning).
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
