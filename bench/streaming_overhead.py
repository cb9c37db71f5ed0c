"""Streaming overhead: time to the first byte of a stream, straight from the tier vs through the gateway."""

from __future__ import annotations

import statistics
import time

import httpx


def _first_byte(client: httpx.Client, url: str, body: dict[str, object]) -> float:
    started = time.perf_counter()
    elapsed = 0.0
    with client.stream("POST", url, json=body) as response:
        for _ in response.iter_raw():
            if not elapsed:
                elapsed = time.perf_counter() - started
    return elapsed


def first_byte_ms(direct_url: str, gateway_url: str, requests: int = 300) -> tuple[float, float]:
    """Median time to first byte (ms) for the tier itself and for the gateway pinned to it, interleaved."""
    messages = [{"role": "user", "content": "Say ok."}]
    direct_body = {"model": "fake", "messages": messages, "stream": True, "logprobs": True, "top_logprobs": 5}
    gateway_body = {"model": "recserve/device", "messages": messages, "stream": True}
    direct: list[float] = []
    gateway: list[float] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            direct.append(_first_byte(client, direct_url, direct_body))
            gateway.append(_first_byte(client, gateway_url, gateway_body))
    return statistics.median(direct) * 1e3, statistics.median(gateway) * 1e3
