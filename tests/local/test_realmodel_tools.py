"""Tool calls from the real embedded tiers (llama.cpp, Qwen2.5-Coder) through the gateway, in the default
config's `tool_mode: constrained`: the openai and Anthropic SDKs get real calls, not JSON in the text.
Marked `realmodel`: uses the cache under ~/.cache/recserve."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import pytest
from openai import OpenAI

from gateway.local.supervisor import RunningTier
from tests.local.test_realmodel_gateway import serve_gateway

pytestmark = pytest.mark.realmodel

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
QUESTION = "What is the weather in Paris right now? Use celsius."


@pytest.fixture(scope="module")
def tools_gateway(real_tier_list: list[RunningTier], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_gateway(real_tier_list, tmp_path_factory.mktemp("tools-gateway"), tool_mode="constrained",
                       tool_call_form="call_or_list") as base:
        yield base


@pytest.mark.parametrize("tier", ["edge", "cloud"])
def test_openai_clients_get_a_real_tool_call(tools_gateway: str, tier: str) -> None:
    with OpenAI(base_url=f"{tools_gateway}/v1", api_key="unused", max_retries=0, timeout=300) as sdk:
        answer = sdk.chat.completions.create(model=f"recserve/{tier}", tools=[WEATHER],
                                             tool_choice="required", temperature=0, max_tokens=96,
                                             messages=[{"role": "user", "content": QUESTION}])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice.message
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and "paris" in str(arguments.get("city", "")).lower()


def test_anthropic_clients_get_a_real_tool_use_streamed(tools_gateway: str) -> None:
    tool = {"name": "get_weather", "description": WEATHER["function"]["description"],
            "input_schema": WEATHER["function"]["parameters"]}
    with (anthropic.Anthropic(base_url=tools_gateway, api_key="unused", max_retries=0, timeout=300) as sdk,
          sdk.messages.stream(model="recserve/edge", max_tokens=256, tools=[tool], tool_choice={"type": "any"},
                              extra_body={"temperature": 0},
                              messages=[{"role": "user", "content": QUESTION}]) as stream):
        message = stream.get_final_message()
    uses = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use" and len(uses) >= 1, message.content
    assert uses[0].name == "get_weather" and "paris" in str(uses[0].input.get("city", "")).lower()
