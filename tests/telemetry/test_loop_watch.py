"""The event loop is never held by work that can wait: the loop watch sees a stall and tells the
gateway's own work from a wait for a CPU; the startup heap is out of garbage collection while the app
runs; big documents parse with the collector paused; the tokenizer is loaded before the first request,
and a large prompt is counted in a worker thread."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway import jsonio
from gateway.config.loading import parse_config
from gateway.server.app import create_app
from gateway.telemetry.loop_watch import LOOP_BUCKETS, watch_event_loop
from gateway.telemetry.tokens import OFF_LOOP_CHARS, PromptTokens
from tests.support.servers import UvicornThread

HELD_S = 0.3


def observations(histogram: Histogram) -> dict[float, float]:
    """Cumulative count per bucket bound (le), +Inf included."""
    return {float(sample.labels["le"]): sample.value for metric in histogram.collect()
            for sample in metric.samples if sample.name.endswith("_bucket")}


async def test_a_stall_is_observed_with_the_cpu_its_thread_spent() -> None:
    registry = CollectorRegistry()
    lag = Histogram("lag", "", buckets=LOOP_BUCKETS, registry=registry)
    stall_cpu = Histogram("stall_cpu", "", buckets=LOOP_BUCKETS, registry=registry)
    watch = asyncio.create_task(watch_event_loop(lag, stall_cpu))
    await asyncio.sleep(0.1)
    spent = time.thread_time() + HELD_S
    while time.thread_time() < spent:  # the loop held by work: HELD_S of CPU
        pass
    await asyncio.sleep(0.1)
    time.sleep(HELD_S)  # the loop held without work, as when the process waits for a CPU
    await asyncio.sleep(0.1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    late, cpu = observations(lag), observations(stall_cpu)
    assert late[float("inf")] - late[0.25] >= 2  # both stalls, each at least ~0.275 s late
    assert cpu[float("inf")] == 2
    assert cpu[float("inf")] - cpu[0.25] == 1  # the work: at least HELD_S of CPU
    assert cpu[0.1] == 1  # the wait: next to none


def test_big_documents_parse_alike_and_leave_the_collector_running() -> None:
    document = {"choices": [{"logprobs": {"content": [{"token": "a", "logprob": -0.1}] * 5000}}]}
    text = json.dumps(document)
    assert len(text) > 64 * 1024
    assert jsonio.loads(text) == jsonio.loads(text.encode()) == document
    assert math.isnan(jsonio.loads(text.replace("-0.1", "NaN"))["choices"][0]["logprobs"]["content"][0]["logprob"])
    with pytest.raises(ValueError):
        jsonio.loads(text[:-1])
    assert gc.isenabled()


def test_while_the_app_runs_its_startup_heap_is_frozen_and_its_tokenizer_loaded() -> None:
    config = parse_config({"tiers": [{"name": "only", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]})
    app = create_app(config)
    server = UvicornThread(app).start()
    try:
        assert gc.get_freeze_count() > 10_000
        assert app.state.reloader.holder.current.tokens.loaded
        time.sleep(0.1)  # a few ticks of the loop watch
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    finally:
        server.stop()
    assert gc.get_freeze_count() == 0
    families = {family.name: family for family in text_string_to_metric_families(text)}
    lag = families["recserve_event_loop_lag_seconds"]
    assert any(s.name.endswith("_count") and s.value > 0 for s in lag.samples)
    assert "recserve_event_loop_stall_cpu_seconds" in families


async def test_a_large_prompt_is_counted_once_and_off_the_event_loop() -> None:
    threads: list[threading.Thread] = []

    def count(body: Mapping[str, Any]) -> int:
        threads.append(threading.current_thread())
        return 42

    small = PromptTokens(count, {"messages": [{"role": "user", "content": "hello"}]})
    assert await small.count() == 42 and small() == 42
    assert threads == [threading.current_thread()]  # a few µs of counting: not worth a thread hop

    threads.clear()
    large = PromptTokens(count, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * (OFF_LOOP_CHARS + 1)}]}]})
    assert await large.count() == 42 and await large.count() == 42 and large() == 42
    assert len(threads) == 1 and threads[0] is not threading.current_thread()
