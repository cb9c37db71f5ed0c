"""POST /v1/responses through a real gateway in uvicorn, scripted tiers, the official OpenAI SDK:
answers, escalation, pinning, logprobs, tools, structured output, streaming in both modes, stored
conversations, and errors in OpenAI's shape."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway
from tests.support.scripted_tier import ThreadedTier

STREAMING_MODES = pytest.mark.parametrize("mode", ["buffered", "early"])


def create(sdk: openai.OpenAI, **kwargs: Any) -> tuple[Any, httpx.Headers]:
    kwargs.setdefault("model", "recserve")
    raw = sdk.responses.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


def recserve_of(response: Any) -> dict[str, Any]:
    extension = response.model_extra.get("recserve")
    assert isinstance(extension, dict)
    return extension


def test_string_input_is_answered_at_the_device(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    response, headers = create(client, input="hi", instructions="Be brief.", metadata={"team": "a"})
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "device answer"
    assert response.model == "device-model" and response.metadata == {"team": "a"}
    assert response.usage is not None and response.usage.output_tokens == 2 and response.usage.input_tokens > 0
    assert headers["x-recserve-tier"] == "device" and headers["x-recserve-path"] == "device"
    assert recserve_of(response)["tier"] == "device"
    sent = tiers["device"].requests[-1]
    assert sent.path.endswith("/chat/completions")
    assert sent.json["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent.json["logprobs"] is True and "metadata" not in sent.json and "recserve" not in sent.json


def test_low_confidence_escalates_to_the_edge(client: openai.OpenAI) -> None:
    create(client, input="warm [device:0.9]")
    response, headers = create(client, input="hard [device:0.1][edge:0.95]")
    assert headers["x-recserve-path"] == "device>edge" and headers["x-recserve-tier"] == "edge"
    assert response.output_text == "edge says" and response.model == "edge-model"
    decision = recserve_of(response)
    assert decision["path"] == "device>edge" and decision["confidence"] == pytest.approx(0.95)


def test_pinned_model_and_extension(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    response, headers = create(client, model="recserve/cloud", input="[device:0.01] x")
    assert headers["x-recserve-path"] == "cloud" and response.output_text == "cloud answer"
    assert not tiers["device"].requests
    _, headers = create(client, input="Is it good?", max_output_tokens=16,
                        extra_body={"recserve": {"task": "classification", "labels": ["yes", "no"]}})
    assert headers["x-recserve-task"] == "classification"
    assert "recserve" not in tiers["device"].requests[-1].json


def test_list_input_items_and_message_content_parts(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    create(client, input=[
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                         {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"role": "user", "content": "go on"},
    ])
    assert tiers["device"].requests[-1].json["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "go on"},
    ]


def test_logprobs_only_when_included_and_trimmed(client: openai.OpenAI) -> None:
    plain, _ = create(client, input="x")
    assert plain.output[0].content[0].logprobs is None
    response, _ = create(client, input="x", include=["message.output_text.logprobs"], top_logprobs=1)
    logprobs = response.output[0].content[0].logprobs
    assert [lp.token for lp in logprobs] == ["device", " answer"]
    assert all(len(lp.top_logprobs) == 1 for lp in logprobs)
    assert logprobs[0].bytes == list(b"device")


def test_function_tools_round_trip(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}]
    response, headers = create(client, input="weather? [*:tool]", tools=tools,
                               tool_choice={"type": "function", "name": "get_weather"})
    sent = tiers["device"].requests[-1].json
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "strict": False,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id == "call_device_0"
    assert calls[0].arguments == "{}" and headers["x-recserve-tier"] == "device"
    assert response.tools[0].name == "get_weather"


def test_text_format_becomes_response_format(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    class Answer(BaseModel):
        value: int

    response = client.responses.parse(model="recserve", input='[*:answer={"value": 3}]', text_format=Answer)
    assert response.output_parsed == Answer(value=3)
    sent = tiers["device"].requests[-1].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Answer"
    assert sent["json_schema"]["schema"]["properties"]["value"]["type"] == "integer"
    create(client, input="x", text={"format": {"type": "json_object"}})
    assert tiers["device"].requests[-1].json["response_format"] == {"type": "json_object"}


@STREAMING_MODES
def test_stream_helper_consumes_the_events(streaming_client: openai.OpenAI, mode: str) -> None:
    with streaming_client.responses.stream(model="recserve", input="hi [device:tokens=0.9,0.8,0.7]",
                                           include=["message.output_text.logprobs"]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "device t1 t2"
    assert final.output_text == "device t1 t2" and final.status == "completed"
    assert [lp.token for lp in final.output[0].content[0].logprobs] == ["device", " t1", " t2"]
    assert final.usage is not None and final.usage.output_tokens == 3
    decision = recserve_of(final)
    assert decision["tier"] == "device" and decision["confidence"] is not None


@STREAMING_MODES
def test_streamed_escalation_serves_one_tier_only(streaming_client: openai.OpenAI, mode: str) -> None:
    list(streaming_client.responses.create(model="recserve", input="warm [device:tokens=0.9,0.9,0.9]", stream=True))
    raw = streaming_client.responses.with_raw_response.create(
        model="recserve", input="hard [device:tokens=0.1,0.1,0.1][edge:tokens=0.9,0.9]", stream=True)
    events = list(raw.parse())
    assert raw.headers["x-recserve-path"] == "device>edge"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "edge t1"
    assert events[-1].type == "response.completed" and recserve_of(events[-1].response)["tier"] == "edge"


@STREAMING_MODES
def test_streamed_tool_call(streaming_client: openai.OpenAI, mode: str) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}},
              "strict": False}]
    with streaming_client.responses.stream(model="recserve/device", input="[*:tool]", tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == "{}"


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI,
                                                         tiers: dict[str, ThreadedTier]) -> None:
    first, _ = create(client, input="my name is Ada", instructions="first rules")
    second, _ = create(client, input="what is my name?", previous_response_id=first.id, instructions="new rules")
    assert second.previous_response_id == first.id
    assert tiers["device"].requests[-1].json["messages"] == [
        {"role": "system", "content": "new rules"},  # instructions do not carry over
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "device answer"},
        {"role": "user", "content": "what is my name?"},
    ]
    fetched = client.responses.retrieve(second.id)
    assert fetched.id == second.id and fetched.output_text == second.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as missing:
        create(client, input="again", previous_response_id=first.id)
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    response, _ = create(client, input="x", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_streamed_response_is_stored_before_completed(client: openai.OpenAI) -> None:
    with client.responses.stream(model="recserve", input="remember me") as stream:
        final = stream.get_final_response()
    continued, _ = create(client, input="and now?", previous_response_id=final.id)
    assert continued.status == "completed"


def test_expired_response_is_a_404(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"conversations": {"ttl_s": 0.05}})
    with gateway.sdk() as sdk:
        first, _ = create(sdk, input="x")
        time.sleep(0.1)
        with pytest.raises(openai.NotFoundError) as expired:
            create(sdk, input="y", previous_response_id=first.id)
    assert expired.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "recserve"}, "input"),
    ({"model": "recserve", "input": 5}, "input"),
    ({"model": "recserve", "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": "recserve", "input": "x", "stream": "yes"}, "stream"),
    ({"model": "recserve", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "recserve", "input": "x", "frobnicate": 1}, "frobnicate"),
    ({"model": "recserve", "input": [{"type": "reasoning", "summary": []}]}, "input[0]"),
    ({"model": "recserve", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "recserve", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "recserve", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"model": "recserve", "input": "x", "background": True}, "background"),
])
def test_bad_input_is_a_400_in_openai_shape(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    answer = http.post("/v1/responses", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_unknown_model_and_non_json(http: httpx.Client) -> None:
    answer = http.post("/v1/responses", json={"model": "gpt-4o", "input": "x"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"
    answer = http.post("/v1/responses", content=b"input=x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and "error" in answer.json()


def test_client_key_is_required(start_gateway: GatewayStarter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "k1")
    gateway = start_gateway()
    with gateway.sdk(api_key="wrong") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.responses.create(model="recserve", input="x")
    with gateway.sdk(api_key="k1") as sdk:
        response = sdk.responses.create(model="recserve", input="x")
        assert sdk.responses.retrieve(response.id).id == response.id
    with gateway.sdk(api_key="wrong") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.responses.retrieve(response.id)


def test_openapi_describes_both_routes(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/responses"] and "post" in paths["/v1/messages"]
    assert {"get", "delete"} <= set(paths["/v1/responses/{response_id}"])


def test_fault_after_the_first_byte_ends_with_response_failed(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="recserve/cloud", input="x [cloud:tokens=0.9,0.9,0.9][cloud:cut]",
                                          stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and "mid-stream" in events[-1].response.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "cloud"


def test_client_leaving_a_stream_closes_the_tier_stream(gateway: RunningGateway,
                                                        tiers: dict[str, ThreadedTier]) -> None:
    body = {"model": "recserve/cloud", "stream": True, "input": "x [cloud:tokens=0.9,0.9][cloud:stall=30]"}
    with httpx.Client(base_url=gateway.root, timeout=10) as raw, \
            raw.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    deadline = time.monotonic() + 5
    while tiers["cloud"].active_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tiers["cloud"].active_connections == 0
