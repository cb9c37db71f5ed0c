"""Streaming through the cascade with the official SDK: buffered and early-commit modes, usage,
logprobs on/off, faults before and after the first byte, and client disconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayStarter, RunningGateway
from tests.support.scripted_tier import ThreadedTier


def stream(sdk: openai.OpenAI, prompt: str, model: str = "recserve", **kwargs: Any) -> tuple[
        list[Any], httpx.Headers]:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True, **kwargs)
    return list(raw.parse()), raw.headers


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def summary_of(chunks: list[Any]) -> dict[str, Any]:
    extension = chunks[-1].model_extra.get("recserve")
    assert isinstance(extension, dict)
    return extension


def wait_until(condition: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.fixture
def early(start_gateway: GatewayStarter) -> RunningGateway:
    return start_gateway({"streaming": {"mode": "early", "decide_after_tokens": 2}})


@pytest.fixture
def early_client(early: RunningGateway) -> Iterator[openai.OpenAI]:
    with early.sdk() as sdk:
        yield sdk


def test_buffered_accepted_answer_streams_in_openai_format(client: openai.OpenAI) -> None:
    chunks, headers = stream(client, "hi [device:tokens=0.9,0.8,0.7]")
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-recserve-tier"] == "device" and headers["x-recserve-path"] == "device"
    assert text_of(chunks) == "device t1 t2"
    assert all(c.model == "device-model" for c in chunks)
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)  # not asked for
    assert all(c.usage is None for c in chunks)  # not asked for
    summary = summary_of(chunks)
    assert summary["tier"] == "device" and summary["confidence"] == pytest.approx((0.9 * 0.8 * 0.7) ** (1 / 3))


def test_buffered_escalation_streams_only_the_upper_tier(client: openai.OpenAI) -> None:
    stream(client, "warm [device:0.9]")
    chunks, headers = stream(client, "hard [device:tokens=0.1,0.1,0.1][edge:tokens=0.9,0.9]")
    assert headers["x-recserve-path"] == "device>edge" and headers["x-recserve-tier"] == "edge"
    assert text_of(chunks) == "edge t1"
    assert "device" not in text_of(chunks)
    assert summary_of(chunks)["path"] == "device>edge"


def test_usage_and_logprobs_when_asked(client: openai.OpenAI) -> None:
    chunks, _ = stream(client, "x [device:tokens=0.5,0.6]", logprobs=True, top_logprobs=1,
                       stream_options={"include_usage": True})
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 2 and usage[0].prompt_tokens == 2
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [round(e.logprob, 6) for e in entries] == [round(-0.693147, 6), round(-0.510826, 6)]
    assert all(len(e.top_logprobs) <= 1 for e in entries)


def test_usage_is_counted_when_the_tier_sends_none(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    # The scripted tier sends usage only when asked; the gateway always asks, so strip it by
    # pinning a request to a tier and checking the gateway's own count matches the tier's.
    chunks, _ = stream(client, "one two three", model="recserve/cloud", stream_options={"include_usage": True})
    (usage,) = [c.usage for c in chunks if c.usage is not None]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert tiers["cloud"].requests[0].json["stream_options"] == {"include_usage": True}


def test_final_tier_fault_before_first_byte_returns_degraded_buffered_answer(client: openai.OpenAI) -> None:
    chunks, headers = stream(client, "x [device:0.1][edge:status=500][cloud:reset]", model="recserve/casserve")
    assert headers["x-recserve-degraded"] == "true" and headers["x-recserve-tier"] == "device"
    assert text_of(chunks) == "device says"


def test_fault_before_first_byte_escalates(client: openai.OpenAI) -> None:
    chunks, headers = stream(client, "x [device:status=503][edge:0.9]")
    assert headers["x-recserve-path"] == "device!>edge"
    assert text_of(chunks) == "edge says"


def test_cut_stream_at_a_lower_tier_escalates_in_buffered_mode(client: openai.OpenAI) -> None:
    chunks, headers = stream(client, "x [device:tokens=0.9,0.9,0.9][device:cut][edge:0.9]")
    assert headers["x-recserve-path"] == "device!>edge"
    assert text_of(chunks) == "edge says"


def test_fault_after_first_byte_ends_with_an_error_event(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="recserve/cloud", messages=[{"role": "user", "content": "x [cloud:tokens=0.9,0.9,0.9][cloud:cut]"}],
        stream=True)
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            seen.append(chunk)
    assert "mid-stream" in str(caught.value)
    assert text_of(seen) == "cloud"  # what the cloud sent before it broke, nothing spliced in


def test_client_disconnect_closes_the_tier_stream(gateway: RunningGateway, tiers: dict[str, ThreadedTier]) -> None:
    body = {"model": "recserve/cloud", "stream": True,
            "messages": [{"role": "user", "content": "x [cloud:tokens=0.9,0.9][cloud:stall=30]"}]}
    with httpx.Client(base_url=gateway.root, timeout=10) as raw, \
            raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
        # Leaving the block closed the connection mid-stream: the gateway must close its own.
    assert wait_until(lambda: tiers["cloud"].active_connections == 0)


def test_early_commit_keeps_a_confident_prefix_and_streams_the_rest(early_client: openai.OpenAI) -> None:
    chunks, headers = stream(early_client, "x [device:tokens=0.9,0.9,0.9,0.9]")
    assert headers["x-recserve-tier"] == "device"
    assert text_of(chunks) == "device t1 t2 t3"
    assert summary_of(chunks)["confidence"] == pytest.approx(0.9)  # the 2-token prefix's


def test_early_commit_escalation_cancels_the_lower_stream(start_gateway: GatewayStarter,
                                                          tiers: dict[str, ThreadedTier]) -> None:
    # k = 1: the device's first token decides, and the device then stalls for longer than the test.
    gateway = start_gateway({"streaming": {"mode": "early", "decide_after_tokens": 1}})
    with gateway.sdk() as sdk:
        stream(sdk, "warm [device:tokens=0.9,0.9]")
        chunks, headers = stream(sdk, "x [device:tokens=0.1,0.1,0.1][device:stall=30][edge:tokens=0.9,0.9]")
    assert headers["x-recserve-path"] == "device>edge"
    assert text_of(chunks) == "edge t1"
    assert wait_until(lambda: tiers["device"].active_connections == 0)


def test_early_commit_uses_prefix_windows_of_their_own(early: RunningGateway) -> None:
    with early.sdk() as sdk:
        stream(sdk, "a [device:tokens=0.9,0.9]")
        stream(sdk, "b [device:tokens=0.8,0.8]")
        raw = sdk.chat.completions.with_raw_response.create(
            model="recserve", messages=[{"role": "user", "content": "c [device:0.5]"}])
    # The non-streamed request meets an empty full-answer window: cold start, no threshold.
    assert raw.headers["x-recserve-threshold"] == "none"


def test_completions_stream_with_legacy_logprobs(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="recserve", prompt="x [device:tokens=0.6,0.6]",
                                                      stream=True, logprobs=1)
    chunks = list(raw.parse())
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "device t1"
    assert chunks[-1].model_extra["recserve"]["confidence"] == pytest.approx(0.6)


@pytest.mark.parametrize("provider", ["litellm"], indirect=True)
def test_streaming_through_litellm(client: openai.OpenAI) -> None:
    chunks, headers = stream(client, "x [cloud:tokens=0.9,0.9]", model="recserve/cloud")
    assert headers["x-recserve-tier"] == "cloud"
    assert text_of(chunks) == "cloud t1"
