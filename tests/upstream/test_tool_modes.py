"""`tool_mode: constrained`: what a tier is asked (a JSON Schema built from the tools) and how its JSON
answer comes back to clients as `tool_calls` — whole and streamed, through the real gateway and SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from gateway.config.loading import ConfigError, parse_config
from gateway.upstream.tool_modes import constrained_body, converted_events, message_fields, tool_call_schema
from tests.conftest import TIER_NAMES, GatewayStarter, ask, base_config, tier_entry
from tests.support.scripted_tier import ThreadedTier

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def _calls(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The call alternatives: at the top, or as the items of the list of calls."""
    found = []
    for alt in schema["anyOf"]:
        found += alt["items"]["anyOf"] if alt.get("type") == "array" else [alt]
    return [alt for alt in found if "name" in alt.get("properties", {})]


def _names(schema: dict[str, Any]) -> list[str]:
    return [alt["properties"]["name"]["const"] for alt in _calls(schema)]


def test_the_schema_asks_for_a_list_of_calls_of_the_offered_tools_and_text_only_under_auto() -> None:
    schema = tool_call_schema({"tools": [WEATHER, TIME]})
    assert schema is not None and _names(schema) == ["get_weather", "get_time"]
    assert [alt["type"] for alt in schema["anyOf"]] == ["array", "object"]  # the calls, or the text
    assert schema["anyOf"][0]["minItems"] == 1
    assert schema["anyOf"][1] == {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    assert _calls(schema)[0]["properties"]["arguments"] == WEATHER["function"]["parameters"]

    required = tool_call_schema({"tools": [WEATHER, TIME], "tool_choice": "required"})
    assert required is not None and not any("text" in alt.get("properties", {}) for alt in required["anyOf"])
    named = tool_call_schema({"tools": [WEATHER, TIME], "tool_choice": {"type": "function",
                                                                          "function": {"name": "get_time"}}})
    assert named is not None and _names(named) == ["get_time"] and len(named["anyOf"]) == 1
    single = tool_call_schema({"tools": [WEATHER], "parallel_tool_calls": False, "tool_choice": "required"})
    assert single is not None and [alt["type"] for alt in single["anyOf"]] == ["object"]


def test_the_call_or_list_form_offers_one_call_beside_a_list_of_several() -> None:
    schema = tool_call_schema({"tools": [WEATHER, TIME]}, "call_or_list")
    assert schema is not None
    assert [alt["type"] for alt in schema["anyOf"]] == ["object", "object", "array", "object"]
    assert [alt["properties"]["name"]["const"] for alt in schema["anyOf"][:2]] == ["get_weather", "get_time"]
    assert schema["anyOf"][2]["minItems"] == 2  # one call is written on its own, never as a list of one
    asked = constrained_body({"tools": [WEATHER], "messages": []}, "call_or_list")
    assert asked is not None
    told = asked["messages"][0]["content"]
    assert "to call a function" in told and "when the request needs several calls" in told
    # Where one call is all that may be made, both forms ask for the same thing.
    single = {"tools": [WEATHER, TIME], "parallel_tool_calls": False}
    assert tool_call_schema(single, "call_or_list") == tool_call_schema(single, "list")


def test_requests_that_are_not_constrained_go_as_they_are() -> None:
    assert constrained_body({"messages": []}) is None
    assert constrained_body({"tools": [WEATHER], "tool_choice": "none"}) is None
    assert constrained_body({"tools": [WEATHER], "response_format": {"type": "json_object"}}) is None
    assert constrained_body({"tools": [WEATHER], "tool_choice": {"type": "function",
                                                                   "function": {"name": "nope"}}}) is None
    asked = constrained_body({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": True,
                              "messages": [{"role": "user", "content": "weather?"}]})
    assert asked is not None and not {"tools", "tool_choice", "parallel_tool_calls"} & set(asked)
    assert asked["response_format"]["type"] == "json_schema"
    system, user = asked["messages"]  # the tools are described in a system message ahead of the rest
    assert system["role"] == "system" and '"name": "get_weather"' in system["content"]
    assert "list of calls" in system["content"] and '{"text"' not in system["content"]  # required: no text
    assert user == {"role": "user", "content": "weather?"}
    kept = constrained_body({"tools": [WEATHER], "messages": [{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "hi"}]})
    assert kept is not None and len(kept["messages"]) == 2
    assert kept["messages"][0]["content"].startswith("Be brief.\n\nYou can call these functions")


def test_answers_become_calls_or_text_and_anything_else_stays_as_it_came() -> None:
    one = message_fields(CALL)
    assert one == {"content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    two = message_fields(f'[{CALL}, {{"name": "get_time", "arguments": {{}}}}]')
    assert two is not None and [c["function"]["name"] for c in two["tool_calls"]] == ["get_weather", "get_time"]
    assert [c["id"] for c in two["tool_calls"]] == ["call_0", "call_1"]
    repeated = message_fields(f'[{CALL}, {CALL}, {{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}]')
    assert repeated is not None and [json.loads(c["function"]["arguments"])["city"]
                                     for c in repeated["tool_calls"]] == ["Paris", "Oslo"]  # a verbatim repeat: once
    assert message_fields('{"text": "It is sunny."}') == {"content": "It is sunny."}
    for unchanged in ('{"name": "get_weather", "argu', "plain prose", '{"text": 5}', "[]", None):
        assert message_fields(unchanged) is None


def test_an_answer_the_token_limit_cut_reads_as_an_openai_tier_cut_one() -> None:
    assert message_fields('{"text": "It is sun', "length") == {"content": "It is sun"}
    assert message_fields('{\n  "text": "caf\\u00', "length") == {"content": "caf"}  # a half escape dropped
    cut = message_fields('{"name": "get_weather", "arguments": {"city": "Par', "length")
    assert cut == {"content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Par'}}]}
    listed = message_fields(f'[{CALL}, {{"name": "get_ti', "length")
    assert listed is not None and [(c["function"]["name"], c["function"]["arguments"])
                                   for c in listed["tool_calls"]] == [("get_weather", '{"city": "Paris"}'),
                                                                      ("get_ti", "")]
    assert message_fields("[\n  {", "length") == {"content": ""}  # nothing readable yet: no text, no call
    assert message_fields("plain prose that ran long", "length") is None  # not the schema's: as it came
    assert message_fields('{"name": "get_weather", "argu', "stop") is None  # not cut: as it came


def test_a_streamed_answer_is_held_until_its_end_and_logprobs_pass_on() -> None:
    pieces = ['{"name": "get_', 'weather", "arguments": ', '{"city": "Paris"}}']

    async def tier() -> AsyncIterator[dict[str, Any]]:
        for i, piece in enumerate(pieces):
            yield {"choices": [{"index": 0, "delta": {"content": piece},
                                "logprobs": {"content": [{"token": piece, "logprob": -0.1 * i}]},
                                "finish_reason": "stop" if i == len(pieces) - 1 else None}]}
        yield {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in converted_events(tier())]

    chunks = asyncio.run(collect())
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:3]]
    assert "content" not in deltas[0] and "content" not in deltas[1]
    assert [c["choices"][0]["logprobs"]["content"][0]["token"] for c in chunks[:3]] == pieces
    last = chunks[2]["choices"][0]
    assert last["finish_reason"] == "tool_calls" and "content" not in last["delta"]
    assert last["delta"]["tool_calls"] == [{"index": 0, "id": "call_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert chunks[3]["usage"]["completion_tokens"] == 3


def _constrained_device(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> Any:
    config = base_config(tiers)
    config["tiers"] = [tier_entry(tiers[name], **({"tool_mode": "constrained"} if name == "device" else {}))
                       for name in TIER_NAMES]
    return start_gateway(config=config)


def test_a_constrained_tier_answers_openai_clients_with_tool_calls(start_gateway: GatewayStarter,
                                                                    tiers: dict[str, ThreadedTier]) -> None:
    gateway = _constrained_device(start_gateway, tiers)
    prompt = f"weather in Paris? [device:answer={CALL}]"
    with gateway.sdk() as sdk:
        answer, headers = ask(sdk, prompt, model="recserve/device", tools=[WEATHER], tool_choice="required")
        asked = tiers["device"].requests[-1].json
        assert asked["response_format"]["json_schema"]["schema"] == tool_call_schema({"tools": [WEATHER],
                                                                                     "tool_choice": "required"})
        assert "tool_choice" not in asked and "tools" not in asked
        assert "get_weather" in asked["messages"][0]["content"]
        call = answer.choices[0].message.tool_calls[0]
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
        assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content is None
        assert headers["x-recserve-tier"] == "device"

        stream = sdk.chat.completions.create(model="recserve/device", stream=True, tools=[WEATHER],
                                             messages=[{"role": "user", "content": prompt}])
        chunks = list(stream)
        streamed = [d.function for c in chunks for choice in c.choices for d in choice.delta.tool_calls or []]
        assert [(f.name, f.arguments) for f in streamed] == [("get_weather", '{"city": "Paris"}')]
        assert not any(choice.delta.content for c in chunks for choice in c.choices)

        plain, _ = ask(sdk, "hello [device:answer={\"text\": \"Hi there\"}]", model="recserve/device", tools=[WEATHER])
        assert plain.choices[0].message.content == "Hi there" and not plain.choices[0].message.tool_calls
        untouched, _ = ask(sdk, "no tools [device:0.9]", model="recserve/device")
        assert "response_format" not in tiers["device"].requests[-1].json and untouched.choices[0].message.content


def test_a_call_the_token_limit_cut_escalates_and_is_served_as_cut_only_from_the_top(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    gateway = _constrained_device(start_gateway, tiers)
    cut = '{"name": "get_weather", "arguments": {"city": "Par'
    with gateway.sdk() as sdk:
        for stream in (False, True):
            raw = sdk.chat.completions.with_raw_response.create(
                model="recserve", tools=[WEATHER], stream=stream, logprobs=True,
                messages=[{"role": "user", "content": f"weather? [device:answer={cut}][device:0.99][device:length]"}])
            assert raw.headers["x-recserve-path"].startswith("device(invalid_tool_call)>"), raw.headers
            assert raw.headers["x-recserve-tier"] != "device"
            answer = raw.parse()
            if stream:
                texts = [c.choices[0].delta.content or "" for c in answer if c.choices]
                assert not any("get_weather" in text for text in texts)  # no delta of the replaced answer
            else:
                assert answer.choices[0].message.tool_calls is None and "get_weather" not in str(answer)

        # Pinned to the cut tier, the client gets what an OpenAI tier cut there sends: the call so far.
        answer, _ = ask(sdk, f"weather? [device:answer={cut}][device:length]", model="recserve/device",
                              tools=[WEATHER])
        assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content is None
        call = answer.choices[0].message.tool_calls[0]
        assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Par')
        text, _ = ask(sdk, 'hi [device:answer={"text": "Hello the][device:length]', model="recserve/device",
                      tools=[WEATHER])
        assert text.choices[0].message.content == "Hello the" and text.choices[0].finish_reason == "length"


def test_a_constrained_tier_answers_anthropic_clients_with_tool_use(start_gateway: GatewayStarter,
                                                                    tiers: dict[str, ThreadedTier]) -> None:
    gateway = _constrained_device(start_gateway, tiers)
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": WEATHER["function"]["parameters"]}
    with anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0) as sdk:
        message = sdk.messages.create(model="recserve/device", max_tokens=64, tools=[tool],
                                      tool_choice={"type": "any"},
                                      messages=[{"role": "user", "content": f"weather? [device:answer={CALL}]"}])
    blocks = [block for block in message.content if block.type == "tool_use"]
    assert [(b.name, b.input) for b in blocks] == [("get_weather", {"city": "Paris"})]
    assert message.stop_reason == "tool_use"
    assert tiers["device"].requests[-1].json["response_format"]["type"] == "json_schema"


def test_an_unknown_tool_mode_is_a_config_error(tiers: dict[str, ThreadedTier]) -> None:
    config = base_config(tiers)
    config["tiers"][0]["tool_mode"] = "grammar"
    with pytest.raises(ConfigError, match="tool_mode"):
        parse_config(config)
