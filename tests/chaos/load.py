"""The load side of the chaos harness: concurrent asyncio clients, each request scripted with
random faults, every outcome recorded. Bounded in time and in request count."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

# Faults a tier can be scripted with (tests/support/tier_script.py); `{slow}` is filled with a
# delay longer than the tier's timeout, so it is a timeout from the gateway's point of view.
FAULTS: tuple[str, ...] = ("status=500", "status=503", "status=429", "reset", "garbage", "nologprobs", "nan",
                           "empty", "sleep={slow}")
STREAM_FAULTS: tuple[str, ...] = (*FAULTS, "stall={slow}", "cut")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which tiers fail, how often, and how slow a 'slow' fault is."""

    rates: dict[str, float]  # tier → share of requests scripted to fail there
    slow_s: float  # seconds a sleep/stall lasts
    stream_share: float = 0.25  # share of requests that stream

    def prompt(self, rng: random.Random, index: int, stream: bool) -> str:
        parts = [f"chaos request {index}"]
        for tier, rate in self.rates.items():
            if rng.random() < rate:
                fault = rng.choice(STREAM_FAULTS if stream else FAULTS).format(slow=self.slow_s)
                parts.append(f"[{tier}:{fault}]")
            else:
                parts.append(f"[{tier}:{rng.uniform(0.05, 0.99):.3f}]")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it."""

    status: int | None  # None: no HTTP answer at all (connection error, client timeout)
    kind: str  # "ok" | "degraded" | "http_<status>" | "stream_error" | "truncated" | exception name
    tier: str | None
    latency_s: float
    stream: bool

    @property
    def lost(self) -> bool:
        """No answer and no clear error: the failure the harness exists to catch."""
        return self.status is None or self.kind == "truncated"


def _stream_kind(text: str) -> str:
    events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    if events and events[-1] == "[DONE]":
        return "ok"
    for event in events:
        try:
            if "error" in json.loads(event):
                return "stream_error"
        except ValueError:
            continue
    return "truncated"


def _body_kind(response: httpx.Response) -> str:
    return "ok" if response.json().get("choices") else "no_choices"


async def one_request(client: httpx.AsyncClient, prompt: str, stream: bool, headers: dict[str, str]) -> Outcome:
    body = {"model": "recserve", "stream": stream, "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.monotonic()
    try:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(None, type(exc).__name__, None, time.monotonic() - started, stream)
    latency = time.monotonic() - started
    tier = response.headers.get("x-recserve-tier")
    if response.status_code != 200:
        return Outcome(response.status_code, f"http_{response.status_code}", tier, latency, stream)
    kind = _stream_kind(response.text) if stream else _body_kind(response)
    if kind == "ok" and response.headers.get("x-recserve-degraded") == "true":
        kind = "degraded"
    return Outcome(200, kind, tier, latency, stream)


async def drive(urls: Sequence[str], plan: FaultPlan, *, concurrency: int, duration_s: float, max_requests: int,
                client_timeout_s: float, seed: int = 0, headers: dict[str, str] | None = None,
                during: Callable[[float], None] | None = None,
                lags: list[float] | None = None) -> list[Outcome]:
    """`concurrency` clients round-robin over `urls` until `duration_s` passes or `max_requests` were sent.

    `during(elapsed)` is called about every 0.1 s from the event loop (in a worker thread, so it may
    block), to stop Redis, reload the config, and so on at chosen moments. `lags` collects how late
    this (client) event loop woke up, to tell client-side delay from the gateway's."""
    outcomes: list[Outcome] = []
    counter = iter(range(max_requests))
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    clients = [httpx.AsyncClient(base_url=url, timeout=client_timeout_s, limits=limits) for url in urls]

    async def worker(number: int) -> None:
        rng = random.Random(seed * 100_003 + number)
        for index in counter:
            if time.monotonic() >= deadline:
                return
            stream = rng.random() < plan.stream_share
            client = clients[index % len(clients)]
            outcomes.append(await one_request(client, plan.prompt(rng, index, stream), stream, headers or {}))

    async def ticker() -> None:
        started = time.monotonic()
        while time.monotonic() < deadline:
            if during is not None:
                await asyncio.to_thread(during, time.monotonic() - started)
            asleep = time.monotonic()
            await asyncio.sleep(0.1)
            if lags is not None:
                lags.append(max(0.0, time.monotonic() - asleep - 0.1))

    try:
        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        tick.cancel()
        await asyncio.gather(tick, return_exceptions=True)
    finally:
        for client in clients:
            await client.aclose()
    return outcomes
