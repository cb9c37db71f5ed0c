"""Probes of structured answers in a real gateway: tool calls agree when they make the same calls (name and
normalised arguments, in any order), JSON answers when their values are the same, streamed or not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import openai

from tests.cascade.test_quality_policy import probes_settle
from tests.cascade.test_quality_probes import probes_of, quality_config, scrape
from tests.cascade.test_streaming import stream
from tests.conftest import GatewayStarter, ask
from tests.support.scripted_tier import ThreadedTier


def _tool(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


TOOLS = [_tool("get_weather", {"city": {"type": "string"}, "days": {"type": "number"}}, ["city"]),
         _tool("get_time", {"zone": {"type": "string"}}, ["zone"])]


def calls(tier: str, *made: tuple[str, str]) -> str:
    """Directives making `tier` answer with these (name, JSON arguments) calls."""
    return "".join(f"[{tier}:call={name}:{quote(arguments)}]" for name, arguments in made)


# The device is sure of every token ([device:1]): the same confidence for every answer, however many
# calls it makes, so the β rule keeps them all and each kept answer is probed.
SAME = ("weather q1 [device:1]" + calls("device", ("get_weather", '{"city": "New York", "days": 3}'))
        + calls("cloud", ("get_weather", '{"days": 3.0, "city": "new york"}')))
REORDERED = ("weather and time q2 [device:1]"
             + calls("device", ("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "CET"}'))
             + calls("cloud", ("get_time", '{"zone": "cet"}'), ("get_weather", '{"city": "Paris"}')))
OTHER_ARGUMENTS = ("weather q3 [device:1]" + calls("device", ("get_weather", '{"city": "Paris"}'))
                   + calls("cloud", ("get_weather", '{"city": "London"}')))


def probed(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], texts: Sequence[str],
           send: Callable[[openai.OpenAI, str], None]) -> tuple[float, float]:
    """`send` each text through a quality gateway that probes every kept answer; (agreed, disagreed)."""
    gateway = start_gateway(quality_config())
    with gateway.sdk() as sdk:
        for text in texts:
            send(sdk, text)
            probes_settle(tiers)
    assert len(tiers["cloud"].requests) == len(texts)  # each kept answer probed once
    samples = scrape(gateway.root)
    return probes_of(samples, "agreed"), probes_of(samples, "disagreed")


def test_tool_calls_are_compared_as_calls(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    def send(sdk: openai.OpenAI, text: str) -> None:
        # A tiny answer budget would make a plain request a classification; a tool request stays generation.
        answer, headers = ask(sdk, text, tools=TOOLS, max_tokens=4)
        assert headers["x-recserve-path"] == "device" and headers["x-recserve-task"] == "generation"
        assert answer.choices[0].message.tool_calls

    # Before, all three agreed: the empty texts of two tool calls were "the same answer".
    assert probed(start_gateway, tiers, [SAME, REORDERED, OTHER_ARGUMENTS], send) == (2, 1)


def test_json_answers_are_compared_as_values(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    same = "q1 [device:answer=" + '{"city": "New York", "n": 2}' + "][cloud:answer=" + '{"n": 2.0, "city": "new york"}]'
    other = "q2 [device:answer=" + '{"city": "Paris", "n": 1}' + "][cloud:answer=" + '{"city": "Paris", "n": 2}]'

    def send(sdk: openai.OpenAI, text: str) -> None:
        _, headers = ask(sdk, text, response_format={"type": "json_object"})
        assert headers["x-recserve-path"] == "device"

    # Token-F1 alone would call the second pair alike (4 of 5 words shared).
    assert probed(start_gateway, tiers, [same, other], send) == (1, 1)


def test_streamed_tool_calls_are_compared_as_calls(start_gateway: GatewayStarter,
                                                   tiers: dict[str, ThreadedTier]) -> None:
    def send(sdk: openai.OpenAI, text: str) -> None:
        chunks, headers = stream(sdk, text, tools=TOOLS)
        assert headers["x-recserve-path"] == "device"
        assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)

    assert probed(start_gateway, tiers, [SAME, REORDERED, OTHER_ARGUMENTS], send) == (2, 1)


def test_streamed_tool_calls_of_the_responses_api_are_compared_as_calls(start_gateway: GatewayStarter,
                                                                        tiers: dict[str, ThreadedTier]) -> None:
    # The Responses API reassembles a stream's calls itself (its events carry them), so it probes them too.
    tools: list[Any] = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"],
                         "strict": False} for t in TOOLS]

    def send(sdk: openai.OpenAI, text: str) -> None:
        with sdk.responses.stream(model="recserve", input=text, tools=tools) as events:
            final = events.get_final_response()
        assert final.output and all(item.type == "function_call" for item in final.output)

    assert probed(start_gateway, tiers, [SAME, REORDERED, OTHER_ARGUMENTS], send) == (2, 1)


def test_a_call_never_agrees_with_a_text_answer(start_gateway: GatewayStarter,
                                                tiers: dict[str, ThreadedTier]) -> None:
    def send(sdk: openai.OpenAI, text: str) -> None:
        _, headers = ask(sdk, text, tools=TOOLS)
        assert headers["x-recserve-path"] == "device"

    text = "q4 " + calls("device", ("get_weather", '{"city": "Paris"}')) + "[cloud:answer=It is sunny in Paris]"
    assert probed(start_gateway, tiers, [text], send) == (0, 1)
