"""Raw HTTP/1.1 on asyncio streams for the hostile tier: read a request, then write whatever bytes a
misbehaviour wants, framing lies included. Nothing here protects the peer from us."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

MAX_REQUEST_BYTES = 16 * 1024 * 1024
WRITE_PIECE = 256 * 1024
Header = tuple[str, str]
Recorder = Callable[..., None]


class BadRequest(Exception):
    """The peer sent something that is not a request we can read."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names
    head: str  # the request line and header lines as received (what an echoing server leaks)
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def stream(self) -> bool:
        body = self.json
        return isinstance(body, dict) and body.get("stream") is True

    @property
    def words(self) -> list[str]:
        """The last user message's words: the case name, then an optional nonce."""
        body = self.json
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return []
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return str(content).split()
        return []


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request; None when the peer closed the connection between requests."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    head = raw[:-4].decode("latin-1").lstrip("\r\n")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    body = await _read_body(reader, headers)
    return Request(parts[0], parts[1], parts[2], headers, head, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            body += await reader.readexactly(size + 2)
            del body[-2:]
            if len(body) > MAX_REQUEST_BYTES:
                raise BadRequest("request body too large")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
        raise BadRequest(f"bad content-length {length[:40]!r}")
    return await reader.readexactly(int(length))


def status_line(status: int, version: str = "HTTP/1.1") -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Hostile"
    return f"{version} {status} {phrase}\r\n".encode("latin-1")


def head_bytes(status: int, headers: Iterable[Header], version: str = "HTTP/1.1") -> bytes:
    lines = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    return status_line(status, version) + lines + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


class Exchange:
    """One request being answered: raw writes with backpressure, peer-gone detection, records."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request,
                 record: Recorder) -> None:
        self.reader = reader
        self.writer = writer
        self.request = request
        self.started = time.monotonic()
        self.aborted = False
        words = request.words
        self.case = words[0] if words else ""
        self.nonce = words[1] if len(words) > 1 else ""
        self._record = record

    @property
    def stream(self) -> bool:
        return self.request.stream

    def record(self, kind: str, **fields: Any) -> None:
        self._record(kind=kind, case=self.case, nonce=self.nonce,
                     after_s=round(time.monotonic() - self.started, 3), **fields)

    async def send(self, *parts: bytes) -> None:
        """Write and wait for the peer to take it (ConnectionError once it has gone)."""
        for part in parts:
            for start in range(0, len(part), WRITE_PIECE):
                self.writer.write(part[start:start + WRITE_PIECE])
                await self.writer.drain()
        if self.writer.transport.is_closing():
            raise ConnectionResetError("peer gone")

    async def drip(self, data: bytes, every_s: float) -> None:
        """One byte per `every_s` seconds."""
        for index in range(len(data)):
            await self.send(data[index:index + 1])
            await asyncio.sleep(every_s)

    async def head(self, status: int, headers: Iterable[Header], version: str = "HTTP/1.1") -> None:
        await self.send(head_bytes(status, headers, version))

    async def whole(self, status: int, content_type: str, body: bytes, headers: Iterable[Header] = (),
                    *, close: bool = False) -> None:
        """A correctly framed answer (Content-Length)."""
        fields = [("content-type", content_type), *headers, ("content-length", str(len(body)))]
        if close:
            fields.append(("connection", "close"))
        await self.send(head_bytes(status, fields) + body)

    async def chunked(self, status: int, content_type: str, pieces: Iterable[bytes],
                      headers: Iterable[Header] = (), *, trailers: bytes = b"") -> None:
        """A correctly framed chunked answer, ended with `trailers` (header lines) if given."""
        await self.head(status, [("content-type", content_type), *headers, ("transfer-encoding", "chunked")])
        for piece in pieces:
            await self.send(chunk(piece))
        await self.send(b"0\r\n" + trailers + b"\r\n")

    async def gone_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for the peer to close; True (and recorded) if it did."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                async with asyncio.timeout(left):
                    if not await self.reader.read(65536):
                        self.record("peer_closed")
                        return True
        except TimeoutError:
            return False
        except ConnectionError:
            self.record("peer_closed")
            return True
        return False

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), the way a crashed server looks."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.aborted = True
