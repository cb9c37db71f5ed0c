"""A hostile OpenAI-compatible tier: a raw asyncio TCP server on loopback that misbehaves on purpose.

The last user message's first word names the misbehaviour (see `misbehaviours.BEHAVIOURS`), the
second is an optional nonce the tests use to find a request's records; `stream: true` asks for the
SSE flavour. Optionally a second listener speaks TLS with a self-signed certificate nobody trusts.

Run in its own process, so the bytes it pushes cost the test process nothing:

    python -m tests.hostile.hostile_tier --port 0 [--tls-port 0 --cert C --key K]
    → prints one JSON line {"port": P, "tls_port": T} when ready

Control (not a misbehaviour): `GET /_hostile/records` returns what happened (requests, peers that
closed early) and how many cases are still running; `POST /_hostile/clear` forgets the records.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import ssl
import sys
import time
from typing import Any

from tests.hostile import tool_misbehaviours  # noqa: F401  (registers the tool-call cases)
from tests.hostile.misbehaviours import BEHAVIOURS, MAX_CASE_S
from tests.hostile.payloads import Payloads, error
from tests.hostile.wire import BadRequest, Exchange, Request, read_request

READ_LIMIT = 1024 * 1024
MAX_RECORDS = 20_000
MAX_LIFETIME_S = 3600.0  # a server its test forgot still goes away


class HostileTier:
    def __init__(self, payloads: Payloads) -> None:
        self.payloads = payloads
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDS)
        self.running = 0  # cases in progress
        self._started = time.monotonic()

    def record(self, **fields: Any) -> None:
        self.records.append({"t": round(time.monotonic() - self._started, 3), **fields})

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        aborted = False
        try:
            while (request := await read_request(reader)) is not None:
                if request.target.startswith("/_hostile/"):
                    await self._control(request, writer)
                    continue
                exchange = Exchange(reader, writer, request, self.record)
                keep = await self._run(exchange)
                aborted = exchange.aborted
                if not keep:
                    break
        except (ConnectionError, BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            if not aborted:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _run(self, ex: Exchange) -> bool:
        ex.record("request", stream=ex.stream, path=ex.request.target)
        action = BEHAVIOURS.get(ex.case)
        if action is None or not ex.request.target.endswith("/chat/completions"):
            unknown = error(f"hostile tier: no case {ex.case!r}", "invalid_request_error")
            await ex.whole(400, "application/json", unknown)
            return True
        self.running += 1
        try:
            async with asyncio.timeout(MAX_CASE_S):
                return await action(ex, self.payloads)
        except ConnectionError:
            ex.record("peer_closed")
            return False
        except TimeoutError:
            ex.record("case_time_cap")
            return False
        finally:
            self.running -= 1
            ex.record("done")

    async def _control(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.target == "/_hostile/clear" and request.method == "POST":
            self.records.clear()
        body = json.dumps({"running": self.running, "records": list(self.records)}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                     % (len(body), body))
        await writer.drain()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def run(args: argparse.Namespace) -> None:
    tier = HostileTier(Payloads.build())
    plain = await asyncio.start_server(tier.serve, args.host, args.port, limit=READ_LIMIT)
    ports: dict[str, int] = {"port": plain.sockets[0].getsockname()[1]}
    servers = [plain]
    if args.tls_port is not None:
        secure = await asyncio.start_server(tier.serve, args.host, args.tls_port, limit=READ_LIMIT,
                                            ssl=tls_context(args.cert, args.key))
        ports["tls_port"] = secure.sockets[0].getsockname()[1]
        servers.append(secure)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps(ports), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.max_lifetime_s)
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-port", type=int, default=None)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--max-lifetime-s", type=float, default=MAX_LIFETIME_S)
    args = parser.parse_args(argv)
    if args.tls_port is not None and not (args.cert and args.key):
        parser.error("--tls-port needs --cert and --key")
    asyncio.run(run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
