"""Cases users hit: tools, n > 1, multi-turn chat, embeddings, token counting without usage."""

from __future__ import annotations

import openai
import pytest

from gateway.telemetry.tokens import PromptTokenCounter
from tests.conftest import GatewayStarter, ask
from tests.support.scripted_tier import ThreadedTier
from tests.support.tier_script import argument_pieces

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_are_forwarded_unchanged_and_tool_answers_judged(client: openai.OpenAI,
                                                               tiers: dict[str, ThreadedTier]) -> None:
    answer, headers = ask(client, 'weather? [device:call=get_weather:{"city":"Paris"}]', tools=[WEATHER_TOOL],
                          tool_choice="auto", response_format={"type": "text"})
    forwarded = tiers["device"].requests[0].json
    assert forwarded["tools"] == [WEATHER_TOOL] and forwarded["tool_choice"] == "auto"
    assert forwarded["response_format"] == {"type": "text"}
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    # Judged as structure: the answer's probability, its name token and each argument piece at p 0.9.
    tokens = 1 + len(argument_pieces('{"city":"Paris"}'))
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.9 ** tokens)


def test_tool_requests_can_be_pinned_to_a_tier(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway({"policy": {"tool_requests": "cloud"}})
    with gateway.sdk() as sdk:
        _, headers = ask(sdk, "weather? [cloud:tool]", tools=[WEATHER_TOOL])
        assert headers["x-recserve-path"] == "cloud"
        _, headers = ask(sdk, "no tools here")
        assert headers["x-recserve-path"] == "device"
    assert len(tiers["device"].requests) == 1


def test_n_choices_are_judged_by_the_least_confident(client: openai.OpenAI) -> None:
    answer, headers = ask(client, "x [device:choices=0.9,0.2,0.6]", n=3)
    assert len(answer.choices) == 3
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.2)


def test_multi_turn_history_is_forwarded_whole(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello [device:0.01]"}, {"role": "user", "content": "again"}]
    raw = client.chat.completions.with_raw_response.create(model="recserve", messages=messages)  # type: ignore[arg-type]
    assert tiers["device"].requests[0].json["messages"] == messages
    assert raw.headers["x-recserve-tier"] == "device"


def test_embeddings_go_to_the_configured_tier(start_gateway: GatewayStarter, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="recserve", input="hello")
    gateway = start_gateway({"embeddings_tier": "edge"})
    with gateway.sdk() as sdk:
        raw = sdk.embeddings.with_raw_response.create(model="recserve", input=["hello", "world"])
        result = raw.parse()
    assert raw.headers["x-recserve-tier"] == "edge"
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert result.model == "edge-model"


def test_prompt_tokens_are_counted_offline() -> None:
    counter = PromptTokenCounter()
    assert counter.load()
    assert counter.count({"prompt": "hello world"}) == 2
    chat = counter.count({"messages": [{"role": "user", "content": "hello world"}]})
    parts = counter.count({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]})
    assert chat == parts == 2 + 3 + 3  # text + per-message framing + reply priming
