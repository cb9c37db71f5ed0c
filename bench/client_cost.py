"""CPU per tier call of the HTTP clients the gateway could use, against the fake tier on loopback.

Why `gateway.upstream.http1` exists: run `python -m bench.client_cost [--calls N]`. Sequential POSTs of the
gateway's usual body; CPU is this process's own (the fake tier runs in another process).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop

from bench.procs import fake_tier, free_port
from gateway.upstream import http1

BODY = (b'{"model":"fake","messages":[{"role":"user","content":"Say ok."}],"max_tokens":1,'
        b'"logprobs":true,"top_logprobs":5}')
HEADERS = {"content-type": "application/json"}


async def _measure(name: str, call: Callable[[], Awaitable[bytes]], calls: int) -> None:
    for _ in range(200):  # warm the connection and the code paths
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"| {name} | {cpu / calls * 1e6:.0f} | {wall / calls * 1e6:.0f} |")


async def _run(port: int, calls: int) -> None:
    url = f"http://127.0.0.1:{port}/v1"
    print("| client | CPU µs per call | wall µs per call |\n|---|---:|---:|")
    pool = http1.Pool(url, limit=4, headers=HEADERS)

    async def with_http1() -> bytes:
        return (await pool.send("POST", "chat/completions", BODY, {})).body

    async with aiohttp.ClientSession(headers=HEADERS) as session, httpx.AsyncClient(headers=HEADERS) as client:
        async def with_aiohttp() -> bytes:
            async with session.post(url + "/chat/completions", data=BODY) as response:
                return await response.read()

        async def with_httpx() -> bytes:
            return (await client.post(url + "/chat/completions", content=BODY)).content

        for name, call in (("gateway.upstream.http1", with_http1), ("aiohttp", with_aiohttp), ("httpx", with_httpx)):
            await _measure(name, call, calls)
    await pool.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    tier = fake_tier(free_port())
    try:
        uvloop.run(_run(int(tier.url.rsplit(":", 1)[1]), args.calls))
    finally:
        tier.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
