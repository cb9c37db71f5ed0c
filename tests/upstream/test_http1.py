"""gateway.upstream.http1 against real servers on loopback.

Each test starts a raw asyncio server whose n-th accepted connection runs the n-th script (the
last script serves any further ones), so a test controls the exact bytes on every connection and
sees what the client did: connections accepted, requests read, EOFs and resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import shutil
import socket
import ssl
import subprocess
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from gateway.upstream import http1
from gateway.upstream.http1 import HttpError, Origin, Pool, Response
from gateway.upstream.http1_connection import STREAM_HIGH_WATER
from tests.support.http11 import Connection, Request, reason

TEST_BOUND_S = 5.0  # no test here may take longer; a hang fails as TimeoutError, not as a stuck run
ROUTE = "chat/completions"


class Peer:
    """The server's side of one accepted connection, as its script drives it."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.http = Connection(reader, writer)
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.done = asyncio.Event()  # the script ended and the server closed its side

    async def next_request(self) -> Request | None:
        request = await self.http.read_request()
        if request is not None:
            self.requests.append(request)
        return request

    async def request(self) -> Request:
        request = await self.next_request()
        assert request is not None, "the client closed instead of sending a request"
        return request

    async def write(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    async def answer(self, body: bytes = b"ok", *fields: str) -> None:
        await self.write(head(200, f"content-length: {len(body)}", *fields) + body)

    async def until_closed(self) -> None:
        """Wait for the client to close this connection (EOF or reset), discarding what it sends."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(1 << 16):
                pass

    def reset(self) -> None:
        self.http.reset()  # SO_LINGER 0: the client sees a TCP RST, as from a crashed server


Script = Callable[[Peer], Awaitable[None]]


class Server:
    def __init__(self, scripts: Sequence[Script]) -> None:
        self.scripts = scripts
        self.peers: list[Peer] = []
        self.port = 0
        self.active = 0
        self.peak = 0  # the most connections open at once
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def url(self, prefix: str = "/v1", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{prefix}"

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.scripts[min(peer.index, len(self.scripts) - 1)](peer)
        except asyncio.CancelledError:
            pass  # the test is over; ending quietly spares asyncio's "exception in callback" log
        except BaseException as exc:  # a script's surprise is the test's failure, raised at its end
            self.failures.append(exc)
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            peer.done.set()

    async def closed(self, index: int) -> None:
        """Wait until the server has seen connection `index` end."""
        await until(lambda: self.accepted > index)
        await self.peers[index].done.wait()


@contextlib.asynccontextmanager
async def serve(*scripts: Script, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
                ) -> AsyncIterator[Server]:
    server = Server(scripts)
    listener = await asyncio.start_server(server.accept, host, 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_BOUND_S):  # bounds the test body: it runs in this task
            yield server
    finally:
        listener.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await listener.wait_closed()
    if server.failures:
        raise server.failures[0]


@contextlib.asynccontextmanager
async def pool_for(server: Server, *, limit: int = 4, **options: object) -> AsyncIterator[Pool]:
    pool = Pool(server.url(), limit=limit, **options)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        await pool.aclose()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def head(status: int = 200, *fields: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason(status)}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def post(pool: Pool, body: bytes = b"{}") -> Response:
    return await pool.send("POST", ROUTE, body, {})


def lines_of(body: http1.Body, read_timeout_s: float) -> AsyncGenerator[bytes, None]:
    """body.lines, typed as the generator it is, so that a test can close it early."""
    return cast(AsyncGenerator[bytes, None], body.lines(read_timeout_s))


def free_slots(pool: Pool) -> int:
    return pool._slots._value  # white-box: the exact claim is "no slot leaked, none gained"


# Scripts shared by several tests.

async def keep_serving(peer: Peer) -> None:
    """Answer every request with "<connection>/<request>" until the client closes."""
    while await peer.next_request() is not None:
        await peer.answer(f"{peer.index}/{len(peer.requests)}".encode())


def then_close(answer: bytes | None, *, rst: bool = False, request_first: bool = True) -> Script:
    """Answer one request normally; then (after reading the next request if `request_first`) send
    `answer` if any, and close with a FIN or a RST."""

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.answer(b"first")
        if request_first:
            await peer.request()
        if answer is not None:
            await peer.write(answer)
            await asyncio.sleep(0.02)  # the client has read it: the RST cannot overtake it
        if rst:
            peer.reset()

    return script


# Keep-alive.

async def test_sequential_requests_reuse_one_connection() -> None:
    async with serve(keep_serving) as server, pool_for(server, headers={"authorization": "Bearer k"}) as pool:
        for n in range(1, 6):
            response = await pool.send("POST", ROUTE, b'{"n": %d}' % n, {"x-extra": "e"})
            assert (response.status, response.body) == (200, f"0/{n}".encode())
        assert server.accepted == 1
        assert pool.idle_connections() == 1
        request = server.peers[0].requests[-1]
        assert (request.method, request.target, request.version) == ("POST", "/v1/chat/completions", "HTTP/1.1")
        assert request.headers["host"] == f"127.0.0.1:{server.port}"
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["x-extra"] == "e"
        assert request.headers["content-length"] == "8"
        assert request.body == b'{"n": 5}'


@pytest.mark.parametrize("closing", [
    head(200, "content-length: 3", "connection: close") + b"bye",
    b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nbye",  # HTTP/1.0 without keep-alive
])
async def test_answer_without_keep_alive_is_not_reused(closing: bytes) -> None:
    async def once(peer: Peer) -> None:
        await peer.request()
        await peer.write(closing)
        await peer.until_closed()  # the client closes it, not only the server

    async with serve(once) as server, pool_for(server) as pool:
        assert (await post(pool)).body == b"bye"
        assert pool.idle_connections() == 0
        await server.closed(0)
        assert (await post(pool)).body == b"bye"
        assert server.accepted == 2


async def test_limit_bounds_concurrent_connections_and_extra_requests_wait() -> None:
    gate = asyncio.Event()

    async def held(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await gate.wait()
            await peer.answer(b"done")

    async with serve(held) as server, pool_for(server, limit=2) as pool:
        sends = [asyncio.create_task(post(pool)) for _ in range(5)]
        await until(lambda: sum(len(peer.requests) for peer in server.peers) == 2)
        await asyncio.sleep(0.05)  # the other three had their chance to connect or send, and did not
        assert (server.accepted, server.active, free_slots(pool)) == (2, 2, 0)
        assert sum(len(peer.requests) for peer in server.peers) == 2
        gate.set()
        answers = await asyncio.gather(*sends)
        assert [answer.body for answer in answers] == [b"done"] * 5
        assert (server.accepted, server.peak, free_slots(pool)) == (2, 2, 2)


# Stale keep-alive connections.

@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
async def test_idle_connection_closed_by_server_is_replaced(rst: bool) -> None:
    async with serve(then_close(None, rst=rst, request_first=False), keep_serving) as server, \
            pool_for(server) as pool:
        assert (await post(pool)).body == b"first"
        await until(lambda: pool.idle_connections() == 0)  # the client noticed while idle
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
async def test_connection_dying_before_the_answer_is_retried_once_on_a_fresh_one(rst: bool) -> None:
    # The race the retry exists for: the server closes an idle connection just as a request goes out.
    async with serve(then_close(None, rst=rst), keep_serving) as server, pool_for(server, limit=1) as pool:
        assert (await post(pool)).body == b"first"
        assert (await post(pool, b'{"again": 1}')).body == b"1/1"
        assert server.accepted == 2
        assert server.peers[0].requests[1].body == server.peers[1].requests[0].body == b'{"again": 1}'
        assert free_slots(pool) == 1


async def test_stale_retry_happens_only_once() -> None:
    async def drops(peer: Peer) -> None:
        await peer.request()  # read and hang up without a word

    async with serve(then_close(None), drops) as server, pool_for(server, limit=1) as pool:
        assert (await post(pool)).body == b"first"
        with pytest.raises(HttpError):
            await post(pool)
        await server.closed(1)
        assert server.accepted == 2
        assert free_slots(pool) == 1


async def test_fresh_connection_dying_before_the_answer_is_not_retried() -> None:
    async def drops(peer: Peer) -> None:
        await peer.request()

    async with serve(drops) as server, pool_for(server) as pool:
        with pytest.raises(HttpError):
            await post(pool)
        await server.closed(0)
        assert server.accepted == 1


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("partial", [b"HTTP/1.1 200", head(200, "content-length: 10") + b"abc"],
                         ids=["head", "body"])
async def test_connection_dying_after_part_of_the_answer_is_an_error(partial: bytes, rst: bool) -> None:
    # The server has begun to answer, so it processed the request: sending it again would repeat it.
    async with serve(then_close(partial, rst=rst), keep_serving) as server, pool_for(server, limit=1) as pool:
        assert (await post(pool)).body == b"first"
        with pytest.raises(HttpError):
            await post(pool)
        assert server.accepted == 1
        assert free_slots(pool) == 1


# Framing.

async def test_chunked_answer_with_extensions_and_trailers() -> None:
    answer = (head(200, "Transfer-Encoding: Chunked") + b"5;name=value\r\nhello\r\n"
              + b'6;a;b="c d"\r\n world\r\n0\r\nx-trailer: t\r\nx-other: u\r\n\r\n')

    async def script(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.write(answer)

    async with serve(script) as server, pool_for(server) as pool:
        for _ in range(2):
            assert (await post(pool)).body == b"hello world"
        assert server.accepted == 1  # a chunked answer leaves the connection reusable


@pytest.mark.parametrize("tail", [[b"part one, ", b"part two"], []], ids=["body", "empty"])
async def test_answer_without_length_reads_until_close(tail: list[bytes]) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "content-type: text/plain"), *tail)

    async with serve(script) as server, pool_for(server) as pool:
        for _ in range(2):
            response = await post(pool)
            assert (response.status, response.body) == (200, b"".join(tail))
        assert server.accepted == 2  # its end was the connection's end


async def test_answer_without_length_cut_by_a_reset_is_an_error() -> None:
    # A RST may have destroyed unread data: the end of the body cannot be told from a truncation.
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200), b"partial")
        await asyncio.sleep(0.02)
        peer.reset()

    async with serve(script) as server, pool_for(server) as pool:
        with pytest.raises(HttpError):
            await post(pool)
        assert server.accepted == 1


# Named ids: the bytes would make the test id, and gzip's header holds the time it ran, so two xdist
# workers would collect different tests.
@pytest.mark.parametrize("encoding, encoded", [
    ("gzip", gzip.compress(b'{"answer": "inflated"}' * 50)),
    ("x-gzip", gzip.compress(b'{"answer": "inflated"}' * 50)),
    ("deflate", zlib.compress(b'{"answer": "inflated"}' * 50)),
], ids=["gzip", "x-gzip", "deflate"])
async def test_compressed_answer_is_inflated(encoding: str, encoded: bytes) -> None:
    async def script(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.write(head(200, f"Content-Encoding: {encoding}", "transfer-encoding: chunked"))
            for start in range(0, len(encoded), 7):  # inflated piece by piece
                await peer.write(chunk(encoded[start:start + 7]))
            await peer.write(b"0\r\n\r\n")

    async with serve(script) as server, pool_for(server) as pool:
        assert (await post(pool)).body == b'{"answer": "inflated"}' * 50
        body = await pool.open("POST", ROUTE, b"{}", {})
        try:
            lines = [line async for line in body.lines(30.0)]
        finally:
            body.release()
        assert b"".join(lines) == b'{"answer": "inflated"}' * 50
        assert server.accepted == 1


@pytest.mark.parametrize("encoded", [b"not gzip at all", gzip.compress(b"x" * 1000)[:-12]], ids=["corrupt", "cut"])
async def test_broken_compressed_answer_is_an_http_error(encoded: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "content-encoding: gzip", f"content-length: {len(encoded)}") + encoded)

    async with serve(script, keep_serving) as server, pool_for(server) as pool:
        with pytest.raises(HttpError):
            await post(pool)
        assert (await post(pool)).body == b"1/1"  # the broken answer's connection was not kept


async def test_header_names_are_lower_cased_and_repeated_fields_combined() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 201 Created\r\nX-Request-ID: abc\r\nContent-Type: application/json\r\n"
                         b"Vary: accept\r\nVARY: origin\r\nContent-Length: 2\r\n\r\n{}")

    async with serve(script) as server, pool_for(server) as pool:
        response = await post(pool)
        assert response.status == 201
        assert response.body == b"{}"
        assert dict(response.headers) == {"x-request-id": "abc", "content-type": "application/json",
                                          "vary": "accept, origin", "content-length": "2"}
        assert server.accepted == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_answer_arriving_byte_by_byte(chunked: bool) -> None:
    payload = b'{"choices": [{"text": "slow"}]}'
    answer = (head(200, "x-long-header-name: a fairly long value", "transfer-encoding: chunked")
              + chunk(payload[:10]) + chunk(payload[10:]) + b"0\r\nx-trailer: t\r\n\r\n") if chunked else (
        head(200, "x-long-header-name: a fairly long value", f"content-length: {len(payload)}") + payload)

    async def script(peer: Peer) -> None:
        peer.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while await peer.next_request() is not None:
            for index in range(len(answer)):
                await peer.write(answer[index:index + 1])
                await asyncio.sleep(0)  # let the client read each byte on its own

    async with serve(script) as server, pool_for(server) as pool:
        for _ in range(2):
            response = await post(pool)
            assert response.body == payload
            assert response.headers["x-long-header-name"] == "a fairly long value"
        assert server.accepted == 1


async def test_large_body_split_across_many_writes() -> None:
    payload = random.Random(7).randbytes(300_000)
    pieces = random.Random(8)

    async def script(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.write(head(200, f"content-length: {len(payload)}"))
            start = 0
            while start < len(payload):
                end = start + pieces.randint(1, 9000)
                await peer.write(payload[start:end])
                start = end

    async with serve(script) as server, pool_for(server) as pool:
        for _ in range(2):
            assert (await post(pool)).body == payload
        assert server.accepted == 1


# Errors.

async def test_connection_refused_is_an_http_error_and_keeps_the_slot() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once it is closed
    pool = Pool(f"http://127.0.0.1:{port}/v1", limit=1)
    try:
        async with asyncio.timeout(TEST_BOUND_S):
            for _ in range(2):
                with pytest.raises(HttpError, match="cannot connect"):
                    await post(pool)
        assert free_slots(pool) == 1
    finally:
        await pool.aclose()


@pytest.mark.parametrize("broken", [
    b"HTTX/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok",
    head(200, "transfer-encoding: chunked") + b"zz\r\nok\r\n0\r\n\r\n",
], ids=["protocol", "status", "chunk-size"])
async def test_malformed_answer_is_an_error_and_its_connection_is_dropped(broken: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.answer(b"first")
        await peer.request()
        await peer.write(broken)
        await peer.until_closed()

    async with serve(script, keep_serving) as server, pool_for(server, limit=1) as pool:
        assert (await post(pool)).body == b"first"
        with pytest.raises(HttpError):  # on a reused connection, yet not retried: it was answered
            await post(pool)
        await server.closed(0)
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2
        assert free_slots(pool) == 1


async def test_unasked_protocol_switch_is_an_answer_whose_connection_is_dropped() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(101, "connection: upgrade", "upgrade: websocket") + b"\x81\x05hello")
        await peer.until_closed()

    async with serve(script, keep_serving) as server, pool_for(server) as pool:
        response = await post(pool)
        assert (response.status, response.body) == (101, b"")  # the caller sees a status it does not want
        await server.closed(0)
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2


@pytest.mark.parametrize("same_write", [False, True], ids=["idle", "same-write"])
@pytest.mark.parametrize("surplus", [b"surprise", head(200, "content-length: 5") + b"extra"],
                         ids=["garbage", "second-answer"])
async def test_unsolicited_bytes_drop_the_connection_and_leave_the_answer_intact(
        surplus: bytes, same_write: bool) -> None:
    """Bytes nobody asked for: on the idle connection, or right behind the answer in the same write."""
    released = asyncio.Event()
    answer = head(200, "content-length: 5", "x-first: yes") + b"first"

    async def script(peer: Peer) -> None:
        await peer.request()
        if same_write:
            await peer.write(answer + surplus)
        else:
            await peer.write(answer)
            await released.wait()
            await peer.write(surplus)
        await peer.until_closed()

    async with serve(script, keep_serving) as server, pool_for(server) as pool:
        response = await post(pool)
        assert (response.status, response.body) == (200, b"first")
        assert dict(response.headers) == {"content-length": "5", "x-first": "yes"}
        released.set()
        await server.closed(0)  # the client dropped the connection: it cannot be trusted any more
        assert pool.idle_connections() == 0
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2


@pytest.mark.parametrize("stall_after", [b"", head(200, "content-length: 100") + b"partial"],
                         ids=["head", "body"])
async def test_timeout_closes_the_connection_and_frees_the_slot(stall_after: bytes) -> None:
    async def stalls(peer: Peer) -> None:
        await peer.request()
        await peer.write(stall_after)
        await peer.until_closed()

    async with serve(stalls, keep_serving) as server, pool_for(server, limit=1) as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await post(pool)
        await server.closed(0)  # the server saw the connection closed
        assert free_slots(pool) == 1
        assert pool.idle_connections() == 0
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2


# Streams.

async def test_stream_lines_arrive_as_they_are_sent_and_a_read_stream_is_reused() -> None:
    more = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "content-type: text/event-stream", "transfer-encoding: chunked"),
                         chunk(b"data: 1\n\n"))
        await more.wait()  # the rest only once the client has the first event
        await peer.write(chunk(b"da"), chunk(b"ta: 2\n\ndata: [DONE]\n"), chunk(b"\nno newline"), b"0\r\n\r\n")
        await keep_serving(peer)

    async with serve(script) as server, pool_for(server) as pool:
        body = await pool.open("POST", ROUTE, b'{"stream": true}', {})
        assert (body.status, body.headers["content-type"]) == (200, "text/event-stream")
        async with contextlib.aclosing(lines_of(body, 1.0)) as lines:
            assert [await anext(lines), await anext(lines)] == [b"data: 1\n", b"\n"]
            more.set()
            rest = [line async for line in lines]
        assert rest == [b"data: 2\n", b"\n", b"data: [DONE]\n", b"\n", b"no newline"]
        assert body.at_eof
        body.release()
        body.release()  # a second release is harmless
        assert pool.idle_connections() == 1
        assert (await post(pool)).body == b"0/2"
        assert server.accepted == 1


async def test_stream_stalling_past_the_read_timeout_raises_timeout() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"), chunk(b"data: 1\n"))
        await peer.until_closed()

    async with serve(script) as server, pool_for(server, limit=1) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        async with contextlib.aclosing(lines_of(body, 0.1)) as lines:
            assert await anext(lines) == b"data: 1\n"
            with pytest.raises(TimeoutError):
                await anext(lines)
        body.release()
        await server.closed(0)
        assert free_slots(pool) == 1


async def test_stream_released_midway_closes_its_connection() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"), chunk(b"data: 1\n\n"), chunk(b"data: 2\n\n"))
        await peer.until_closed()  # the tier would go on generating: the client must hang up

    async with serve(script, keep_serving) as server, pool_for(server, limit=1) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        async with contextlib.aclosing(lines_of(body, 1.0)) as lines:
            assert await anext(lines) == b"data: 1\n"
        body.release()
        await server.closed(0)
        assert pool.idle_connections() == 0
        assert (await post(pool)).body == b"1/1"
        assert server.accepted == 2


async def test_large_stream_read_slowly_arrives_intact_with_bounded_buffering() -> None:
    payload = random.Random(3).randbytes(4 << 20)

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, f"content-length: {len(payload)}"))
        for start in range(0, len(payload), 1 << 16):
            await peer.write(payload[start:start + (1 << 16)])  # drain waits while the client does not read
        await keep_serving(peer)

    bound = STREAM_HIGH_WATER + (512 << 10)  # high water plus at most one socket read
    async with serve(script) as server, pool_for(server) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        connection = body._connection
        await asyncio.sleep(0.1)  # not reading: without backpressure the whole body would pile up here
        assert 0 < connection._buffered <= bound
        received = bytearray()
        async for part in body.chunks():
            received += part
            assert connection._buffered <= bound
            await asyncio.sleep(0.001)
        body.release()
        assert received == payload
        assert (await post(pool)).body == b"0/2"  # fully read: the connection went back to the pool
        assert server.accepted == 1


async def test_whole_large_answer_released_unread_leaves_a_working_connection() -> None:
    # The answer ends in the very read that crosses the high-water mark: reading is paused, yet the
    # answer is complete, so the connection goes back to the pool. Its next answer must be read.
    payload = bytes(STREAM_HIGH_WATER + (64 << 10))

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, f"content-length: {len(payload)}") + payload)
        await keep_serving(peer)

    async with serve(script) as server, pool_for(server) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        await until(lambda: body._connection.complete)
        body.release()  # e.g. a stream the cascade stops listening to once it has its answer
        assert pool.idle_connections() == 1
        assert (await post(pool)).body == b"0/2"
        assert server.accepted == 1


# Closing the pool.

async def test_aclose_closes_idle_connections_and_refuses_new_requests() -> None:
    async with serve(keep_serving) as server:
        pool = Pool(server.url(), limit=2)
        await post(pool)
        body = await pool.open("POST", ROUTE, b"{}", {})  # in use while the pool closes
        assert pool.idle_connections() == 0
        await post(pool)  # a second connection, idle after this
        assert (server.accepted, pool.idle_connections()) == (2, 1)
        await pool.aclose()
        assert pool.idle_connections() == 0
        await server.closed(1)
        assert await body.read() == b"0/2"
        body.release()  # a connection released after aclose is closed, not pooled
        await server.closed(0)
        assert pool.idle_connections() == 0
        with pytest.raises(HttpError):
            await post(pool)
        with pytest.raises(HttpError):
            await pool.open("POST", ROUTE, b"{}", {})
        assert free_slots(pool) == 2


# Origins.

@pytest.mark.parametrize("url, origin", [
    ("http://tier:8101/v1", Origin(False, "tier", 8101, "/v1", "tier:8101")),
    ("http://example.com", Origin(False, "example.com", 80, "", "example.com")),
    ("http://example.com:80/", Origin(False, "example.com", 80, "", "example.com")),
    ("https://api.example.com/v1/", Origin(True, "api.example.com", 443, "/v1", "api.example.com")),
    ("https://example.com:8443/a/b", Origin(True, "example.com", 8443, "/a/b", "example.com:8443")),
    ("http://example.com:443", Origin(False, "example.com", 443, "", "example.com:443")),
    ("http://[::1]:8080/v1", Origin(False, "::1", 8080, "/v1", "[::1]:8080")),
    ("https://[2001:db8::1]/", Origin(True, "2001:db8::1", 443, "", "[2001:db8::1]")),
    ("HTTP://Example.COM/V1", Origin(False, "example.com", 80, "/V1", "example.com")),
])
def test_origin_parse(url: str, origin: Origin) -> None:
    assert Origin.parse(url) == origin


@pytest.mark.parametrize("url", ["ftp://example.com/", "unix:///tmp/tier.sock", "example.com:8000",
                                 "http:///v1", "", "ws://example.com"])
def test_origin_parse_rejects_what_is_not_http(url: str) -> None:
    with pytest.raises(ValueError):
        Origin.parse(url)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_literal_origin_end_to_end() -> None:
    async with serve(keep_serving, host="::1") as server:
        pool = Pool(server.url(host="[::1]"), limit=1)
        try:
            assert (await post(pool)).body == b"0/1"
        finally:
            await pool.aclose()
        assert server.peers[0].requests[0].headers["host"] == f"[::1]:{server.port}"


# TLS.

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


async def test_tls_pool_against_a_local_tls_server(certificate: tuple[Path, Path]) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.answer(b"over tls")
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"), chunk(b"data: 1\n"), b"0\r\n\r\n")
        await peer.request()
        await peer.write(head(200), b"until close")  # its end is the TLS session's end

    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with serve(script, tls=_server_context(certificate)) as server:
        pool = Pool(server.url(scheme="https"), limit=1, ssl_context=trusting)
        try:
            assert (await post(pool)).body == b"over tls"
            body = await pool.open("POST", ROUTE, b"{}", {})
            assert [line async for line in body.lines(30.0)] == [b"data: 1\n"]
            body.release()
            assert (await post(pool)).body == b"until close"
            assert server.accepted == 1
            assert server.peers[0].requests[0].headers["host"] == f"127.0.0.1:{server.port}"
        finally:
            await pool.aclose()


async def test_tls_pool_refuses_an_untrusted_certificate(certificate: tuple[Path, Path]) -> None:
    async def script(peer: Peer) -> None:
        await peer.until_closed()

    async with serve(script, tls=_server_context(certificate)) as server:
        pool = Pool(server.url(scheme="https"), limit=1)  # the system's trust store: not ours
        try:
            with pytest.raises(HttpError, match="cannot connect"):
                await post(pool)
        finally:
            await pool.aclose()


# Bounds on what a server may send (a tier is somebody else's server).

SMALL = http1.Limits(header_bytes=4096, headers=16, body_bytes=64 * 1024, line_bytes=1024)


async def _send_forever(peer: Peer, piece: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            await peer.write(piece)


@pytest.mark.parametrize("answer", [
    pytest.param(lambda: head(200, *["x-repeat: a"] * 200_000, "content-length: 2") + b"{}", id="repeated-field"),
    pytest.param(lambda: head(200, "x-big: " + "a" * 200_000, "content-length: 2") + b"{}", id="one-huge-field"),
])
async def test_header_section_over_the_limit_is_refused_fast(answer: Callable[[], bytes]) -> None:
    data = answer()

    async def script(peer: Peer) -> None:
        await peer.request()
        with contextlib.suppress(ConnectionError):
            await peer.write(data)

    async with serve(script, keep_serving) as server, pool_for(server, limits=SMALL) as pool:
        with pytest.raises(http1.LimitExceeded):
            await post(pool)
        assert (await post(pool)).body == b"1/1"  # the offending connection was dropped


async def test_endless_header_section_is_refused_at_the_limit() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\n")
        await _send_forever(peer, b"x-more: " + b"a" * 1000 + b"\r\n")

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        with pytest.raises(http1.LimitExceeded):
            await post(pool)
        await server.closed(0)


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
async def test_body_over_the_limit_is_refused_without_keeping_it(framing: str) -> None:
    piece = b"x" * 4096

    async def script(peer: Peer) -> None:
        await peer.request()
        if framing == "content-length":
            await peer.write(head(200, f"content-length: {200 << 20}"))
            await _send_forever(peer, piece)
        elif framing == "chunked":
            await peer.write(head(200, "transfer-encoding: chunked"))
            await _send_forever(peer, chunk(piece))
        else:
            await peer.write(head(200))
            await _send_forever(peer, piece)

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        with pytest.raises(http1.LimitExceeded):
            await post(pool)
        await server.closed(0)


async def test_a_stream_over_the_limit_ends_in_the_limit_not_in_the_lost_connection() -> None:
    """Crossing the limit aborts the connection; a reader still draining what came before must get the
    limit (a fault `limit`), not the connection lost that followed."""
    event = b"data: " + b"x" * 1000 + b"\n\n"

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"))
        await _send_forever(peer, chunk(event * 60))

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        await asyncio.sleep(0.2)  # the reader is late: the limit is crossed, the connection lost
        try:
            with pytest.raises(http1.LimitExceeded):
                _ = [line async for line in body.lines(1.0)]
        finally:
            body.release()


async def test_body_under_the_limit_is_whole() -> None:
    body = b"y" * (SMALL.body_bytes - 1)

    async def script(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.answer(body)

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        assert (await post(pool)).body == body


@pytest.mark.parametrize("as_lines", [False, True], ids=["read", "lines"])
async def test_compression_bomb_stops_at_the_limit(as_lines: bool) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # ~64 KB on the wire, 64 MiB inflated

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "content-encoding: gzip", f"content-length: {len(bomb)}") + bomb)

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        try:
            with pytest.raises(http1.LimitExceeded):
                if as_lines:
                    async for _ in body.lines(1.0, max_line_bytes=1 << 30):
                        pass
                else:
                    await body.read()
        finally:
            body.release()
        assert body._inflated_bytes <= SMALL.body_bytes + (64 << 10)  # stopped within one piece
        assert server.accepted == 1


async def test_a_line_over_the_limit_is_refused_and_shorter_lines_pass() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"))
        await peer.write(chunk(b"data: short\n\n" + b"z" * 700))
        await _send_forever(peer, chunk(b"z" * 100))

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        seen: list[bytes] = []
        try:
            with pytest.raises(http1.LimitExceeded):
                async for line in body.lines(30.0):
                    seen.append(line)
        finally:
            body.release()
        assert seen == [b"data: short\n", b"\n"]
        assert server.accepted == 1


async def test_lifted_body_limit_lets_a_live_stream_run_past_it() -> None:
    lines = [b"data: %d\n\n" % i for i in range(20_000)]  # ~200 KB: over the 64 KiB body limit
    lifted = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.write(head(200, "transfer-encoding: chunked"))
        # The limit is lifted once the stream is served live, before it passes the limit (the gateway
        # decides within the first tokens); bytes that arrived earlier were counted, as they should be.
        await lifted.wait()
        for start in range(0, len(lines), 100):
            await peer.write(chunk(b"".join(lines[start:start + 100])))
        await peer.write(b"0\r\n\r\n")

    async with serve(script) as server, pool_for(server, limits=SMALL) as pool:
        body = await pool.open("POST", ROUTE, b"{}", {})
        body.lift_body_limit()
        lifted.set()
        try:
            received = [line async for line in body.lines(30.0)]
        finally:
            body.release()
        assert len(received) == 2 * len(lines)
        assert server.accepted == 1


async def test_interim_answers_are_skipped() -> None:
    async def script(peer: Peer) -> None:
        while await peer.next_request() is not None:
            await peer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
                             + head(200, "content-length: 5", "x-real: yes") + b"final")

    async with serve(script) as server, pool_for(server) as pool:
        first = await post(pool)
        assert (first.status, first.body, first.headers.get("x-real"), "link" in first.headers) == (
            200, b"final", "yes", False)
        assert (await post(pool)).body == b"final"  # the connection stayed usable
        assert server.accepted == 1
