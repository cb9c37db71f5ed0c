"""POST /v1/messages through a real gateway in uvicorn, scripted tiers, the official Anthropic SDK:
answers, escalation, pinning, tools, streaming in both modes, auth by x-api-key, and errors in
Anthropic's shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway
from tests.support.scripted_tier import ThreadedTier

STREAMING_MODES = pytest.mark.parametrize("mode", ["buffered", "early"])
TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def claude(gateway: RunningGateway, api_key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.root, api_key=api_key, max_retries=0)


@pytest.fixture
def sdk(gateway: RunningGateway) -> Iterator[anthropic.Anthropic]:
    with claude(gateway) as client:
        yield client


def create(client: anthropic.Anthropic, prompt: str, model: str = "recserve", **kwargs: Any) -> tuple[
        Any, httpx.Headers]:
    kwargs.setdefault("max_tokens", 64)
    raw = client.messages.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   **kwargs)
    return raw.parse(), raw.headers


def test_message_is_answered_at_the_device(sdk: anthropic.Anthropic, tiers: dict[str, ThreadedTier]) -> None:
    message, headers = create(sdk, "hi", system="Be brief.", stop_sequences=["\n\n"],
                              extra_body={"temperature": 0.5})
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == "device answer"
    assert message.model == "device-model" and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 2 and message.usage.input_tokens > 0
    assert headers["x-recserve-tier"] == "device" and message.model_extra["recserve"]["tier"] == "device"
    sent = tiers["device"].requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent["stop"] == ["\n\n"] and sent["max_tokens"] == 64 and sent["logprobs"] is True
    assert sent["temperature"] == 0.5


def test_escalation_and_pinning(sdk: anthropic.Anthropic, tiers: dict[str, ThreadedTier]) -> None:
    create(sdk, "warm [device:0.9]")
    message, headers = create(sdk, "hard [device:0.1][edge:0.95]")
    assert headers["x-recserve-path"] == "device>edge" and message.content[0].text == "edge says"
    tiers["device"].clear()
    message, headers = create(sdk, "x", model="recserve/cloud")
    assert headers["x-recserve-path"] == "cloud" and not tiers["device"].requests


def test_classification_through_the_extension(sdk: anthropic.Anthropic) -> None:
    _, headers = create(sdk, "good? [device:label=yes:0.7,no:0.3]", max_tokens=2,
                        extra_body={"recserve": {"labels": ["yes", "no"]}})
    assert headers["x-recserve-task"] == "classification"
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.7)


def test_tools_and_tool_results(sdk: anthropic.Anthropic, tiers: dict[str, ThreadedTier]) -> None:
    message, _ = create(sdk, "weather? [*:tool]", tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})
    assert message.stop_reason == "tool_use"
    use = next(block for block in message.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {} and use.id == "call_device_0"
    sent = tiers["device"].requests[-1].json
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    sdk.messages.create(model="recserve", max_tokens=16, tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": use.id, "name": use.name, "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                                     {"type": "text", "text": "so?"}]},
    ])
    assert tiers["device"].requests[-1].json["messages"][1:] == [
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": use.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": use.id, "content": "sunny"},
        {"role": "user", "content": "so?"},
    ]


@pytest.fixture
def streaming_sdk(start_gateway: GatewayStarter, mode: str) -> Iterator[anthropic.Anthropic]:
    gateway = start_gateway({"streaming": {"mode": mode, "decide_after_tokens": 2}})
    with claude(gateway) as client:
        yield client


@STREAMING_MODES
def test_stream_helper_consumes_the_events(streaming_sdk: anthropic.Anthropic, mode: str) -> None:
    with streaming_sdk.messages.stream(model="recserve", max_tokens=32, messages=[
            {"role": "user", "content": "warm [device:tokens=0.9,0.9,0.9]"}]) as warm:
        warm.until_done()  # streams judged early have prefix windows of their own: warm those
    with streaming_sdk.messages.stream(model="recserve", max_tokens=32, messages=[
            {"role": "user", "content": "hard [device:tokens=0.1,0.1,0.1][edge:tokens=0.9,0.8,0.7]"}]) as stream:
        kinds = [event.type for event in stream]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert text == "" and final.content[0].text == "edge t1 t2"  # the text stream was read by the loop above
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    assert final.model == "edge-model"


@STREAMING_MODES
def test_streamed_text_and_decision(streaming_sdk: anthropic.Anthropic, mode: str) -> None:
    raw = streaming_sdk.messages.with_raw_response.create(
        model="recserve", max_tokens=32, stream=True,
        messages=[{"role": "user", "content": "[device:tokens=0.9,0.8,0.7]"}])
    events = list(raw.parse())
    assert raw.headers["x-recserve-tier"] == "device"
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(deltas) == "device t1 t2"
    closing = next(e for e in events if e.type == "message_delta")
    assert closing.model_extra["recserve"]["tier"] == "device"
    assert closing.model_extra["recserve"]["confidence"] is not None


@STREAMING_MODES
def test_streamed_tool_use(streaming_sdk: anthropic.Anthropic, mode: str) -> None:
    with streaming_sdk.messages.stream(model="recserve/device", max_tokens=32, tools=TOOLS,
                                       messages=[{"role": "user", "content": "[*:tool]"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "name", None)) for b in final.content] == [("tool_use", "get_weather")]


def test_x_api_key_authenticates(start_gateway: GatewayStarter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "k1")
    gateway = start_gateway()
    with claude(gateway, api_key="k1") as good:
        assert create(good, "x")[0].content[0].text == "device answer"
    with claude(gateway, api_key="wrong") as bad, pytest.raises(anthropic.AuthenticationError) as refused:
        create(bad, "x")
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    answer = httpx.post(gateway.root + "/v1/messages", headers={"authorization": "Bearer k1"},
                        json={"model": "recserve", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 200


@pytest.mark.parametrize("body", [
    {"model": "recserve", "messages": [{"role": "user", "content": "x"}]},  # max_tokens is required
    {"model": "recserve", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
    {"model": "recserve", "max_tokens": 4, "messages": []},
    {"model": "recserve", "max_tokens": 4, "messages": [{"role": "system", "content": "x"}]},
    {"model": "recserve", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
    {"model": "recserve", "max_tokens": 4, "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
    {"model": "recserve", "max_tokens": 4, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
    {"model": "recserve", "max_tokens": 4, "stop_sequences": [f"s{k}" for k in range(65)],
     "messages": [{"role": "user", "content": "x"}]},
    {"model": "recserve", "max_tokens": 4, "tool_choice": {"type": "tool"}, "messages": [{"role": "user",
                                                                                          "content": "x"}]},
])
def test_bad_input_is_a_400_in_anthropic_shape(gateway: RunningGateway, body: dict[str, Any]) -> None:
    answer = httpx.post(gateway.root + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 400, answer.text
    payload = answer.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error", payload
    assert payload["error"]["message"]


def test_unknown_model_and_tier_failure_in_anthropic_shape(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        create(sdk, "x", model="claude-sonnet-4-5")
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as failed:
        create(sdk, "[cloud:status=500] x", model="recserve/cloud")
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert failed.value.response.headers["x-recserve-path"] == "cloud!"


def test_fault_after_the_first_byte_is_an_error_event(sdk: anthropic.Anthropic) -> None:
    seen: list[Any] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in sdk.messages.create(model="recserve/cloud", max_tokens=16, stream=True,
                                         messages=[{"role": "user", "content": "x [cloud:tokens=0.9,0.9][cloud:cut]"}]):
            seen.append(event)
    assert "mid-stream" in str(caught.value)
    assert "".join(e.delta.text for e in seen if e.type == "content_block_delta") == "cloud"
