"""The validity gate through the Responses and Messages APIs (real gateway in uvicorn, scripted tiers,
the official `openai` and `anthropic` SDKs): their tools, tool choices and text formats reach the
gate through the translation into the chat body, so a lower tier's broken answer escalates with its
reason, streamed or not, and the client gets the upper tier's answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import RunningGateway
from tests.support.scripted_tier import ThreadedTier

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"], "additionalProperties": False}
GOOD_CALL = 'call=get_weather:{"city":"Oslo"}'
GOOD_PERSON = 'answer={"name":"Ada","age":36}'

# (reason, tool_choice: None | "required" | "none" | "named", the device's broken answer, the edge's good one)
TOOL_CASES: list[tuple[str, str | None, str, str]] = [
    ("invalid_tool_call", None, 'call=get_forecast:{"city":"Oslo"}', GOOD_CALL),
    ("invalid_tool_call", None, 'call=get_weather:{"city":', GOOD_CALL),
    ("invalid_tool_call", None, "call=get_weather:{}", GOOD_CALL),
    ("invalid_tool_call", None, 'call=get_weather:{"city":7}', GOOD_CALL),
    ("missing_tool_call", "required", "0.99", GOOD_CALL),
    ("missing_tool_call", "named", "call=get_time:{}", GOOD_CALL),
    ("unexpected_tool_call", "none", GOOD_CALL, "0.9"),
]
TOOL_IDS = ["unknown-name", "not-json", "missing-argument", "wrong-type", "required", "named", "none"]
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
MODES = pytest.mark.parametrize("mode", ["buffered", "early"])


@pytest.fixture
def claude(streaming_gateway: RunningGateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=streaming_gateway.root, api_key="unused", max_retries=0) as client:
        yield client


def responses_tools(choice: str | None) -> dict[str, Any]:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False},
             {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}},
              "strict": False}]
    fields: dict[str, Any] = {"tools": tools}
    if choice == "named":
        fields["tool_choice"] = {"type": "function", "name": "get_weather"}
    elif choice is not None:
        fields["tool_choice"] = choice
    return fields


def respond(sdk: openai.OpenAI, prompt: str, stream: bool, **fields: Any) -> tuple[Any, httpx.Headers]:
    """The Response (streamed: the one `response.completed` carries) and the headers."""
    raw = sdk.responses.with_raw_response.create(model="recserve", input=prompt, stream=stream, **fields)
    if not stream:
        return raw.parse(), raw.headers
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    return events[-1].response, raw.headers


def assert_edge_response(response: Any, good: str) -> None:
    calls = [item for item in response.output if item.type == "function_call"]
    if good.startswith("call="):
        assert [(c.name, c.arguments, c.call_id) for c in calls] == [
            ("get_weather", '{"city":"Oslo"}', "call_edge_0_0")]
    elif good.startswith("answer="):
        assert response.output_text == good.removeprefix("answer=") and not calls
    else:
        assert response.output_text == "edge says" and not calls


@MODES
@STREAMED
@pytest.mark.parametrize(("reason", "choice", "bad", "good"), TOOL_CASES, ids=TOOL_IDS)
def test_responses_function_tools(streaming_client: openai.OpenAI, mode: str, stream: bool, reason: str,
                                  choice: str | None, bad: str, good: str) -> None:
    prompt = f"q [device:{bad}][edge:{good}]"
    response, headers = respond(streaming_client, prompt, stream, **responses_tools(choice))
    assert headers["x-recserve-path"] == f"device({reason})>edge"
    assert_edge_response(response, good)


@MODES
@STREAMED
@pytest.mark.parametrize(("reason", "text_format", "bad", "good"), [
    ("invalid_json", {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True},
     "answer=Ada, 36", GOOD_PERSON),
    ("schema_mismatch", {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True},
     'answer={"name":"Ada","age":"36"}', GOOD_PERSON),
    ("invalid_json", {"type": "json_object"}, "answer=not json", 'answer={"ok":true}'),
], ids=["json-schema-unparsed", "json-schema-mismatch", "json-object"])
def test_responses_text_format(streaming_client: openai.OpenAI, mode: str, stream: bool, reason: str,
                               text_format: dict[str, Any], bad: str, good: str) -> None:
    response, headers = respond(streaming_client, f"q [device:{bad}][edge:{good}]", stream,
                                text={"format": text_format})
    assert headers["x-recserve-path"] == f"device({reason})>edge"
    assert_edge_response(response, good)


def messages_tools(choice: str | None) -> dict[str, Any]:
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA},
             {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None:
        fields["tool_choice"] = {"required": {"type": "any"}, "none": {"type": "none"},
                                 "named": {"type": "tool", "name": "get_weather"}}[choice]
    return fields


def send_message(claude: anthropic.Anthropic, request: dict[str, Any], stream: bool) -> tuple[Any, httpx.Headers]:
    """The Message (streamed: the SDK's final message) and the headers."""
    if stream:
        with claude.messages.stream(**request) as events:
            return events.get_final_message(), events.response.headers
    raw = claude.messages.with_raw_response.create(**request)
    return raw.parse(), raw.headers


@MODES
@STREAMED
@pytest.mark.parametrize(("reason", "choice", "bad", "good"), TOOL_CASES, ids=TOOL_IDS)
def test_messages_tools(claude: anthropic.Anthropic, mode: str, stream: bool, reason: str, choice: str | None,
                        bad: str, good: str) -> None:
    request: dict[str, Any] = {"model": "recserve", "max_tokens": 64,
                               "messages": [{"role": "user", "content": f"q [device:{bad}][edge:{good}]"}],
                               **messages_tools(choice)}
    message, headers = send_message(claude, request, stream)
    assert headers["x-recserve-path"] == f"device({reason})>edge"
    uses = [block for block in message.content if block.type == "tool_use"]
    if good.startswith("call="):
        assert [(u.name, u.input, u.id) for u in uses] == [("get_weather", {"city": "Oslo"}, "call_edge_0_0")]
    else:
        assert not uses and message.content[0].text == "edge says"


@MODES
@STREAMED
@pytest.mark.parametrize(("reason", "bad"), [("invalid_json", "answer=Ada, 36"),
                                             ("schema_mismatch", 'answer={"name":"Ada"}')])
def test_messages_structured_outputs(claude: anthropic.Anthropic, mode: str, stream: bool, reason: str,
                                     bad: str) -> None:
    request: dict[str, Any] = {
        "model": "recserve", "max_tokens": 64,
        "messages": [{"role": "user", "content": f"q [device:{bad}][edge:{GOOD_PERSON}]"}],
        "output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}}
    message, headers = send_message(claude, request, stream)
    assert headers["x-recserve-path"] == f"device({reason})>edge"
    assert message.content[0].text == '{"name":"Ada","age":36}'


@MODES
def test_messages_single_tool_use_is_honoured(claude: anthropic.Anthropic, mode: str,
                                              tiers: dict[str, ThreadedTier]) -> None:
    two = f"{GOOD_CALL}][device:{GOOD_CALL}"
    raw = claude.messages.with_raw_response.create(
        model="recserve", max_tokens=64, messages=[{"role": "user", "content": f"q [device:{two}][edge:{GOOD_CALL}]"}],
        **messages_tools(None), tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert raw.headers["x-recserve-path"] == "device(invalid_tool_call)>edge"
    assert tiers["device"].requests[-1].json["parallel_tool_calls"] is False
    assert [block.id for block in raw.parse().content if block.type == "tool_use"] == ["call_edge_0_0"]
