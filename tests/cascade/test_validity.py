"""The validity gate through a real gateway (uvicorn), scripted tiers and the official `openai` SDK:
a lower tier's structurally broken answer escalates with its reason, whatever its confidence; a valid
one is judged as before; the top tier's is served as it is and counted; streams, buffered and early,
show the client one tier's answer only."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cascade.test_streaming import summary_of, text_of, wait_until
from tests.conftest import GatewayStarter, RunningGateway, ask

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}}}
GOOD_CALL = 'call=get_weather:{"city":"Oslo"}'
GOOD_PERSON = 'answer={"name":"Ada","age":36}'
NAMED = {"type": "function", "function": {"name": "get_weather"}}

# (reason, request fields, the device's broken answer, the edge's good one)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("invalid_tool_call", {"tools": [WEATHER]}, 'call=get_forecast:{"city":"Oslo"}', GOOD_CALL),  # not offered
    ("invalid_tool_call", {"tools": [WEATHER]}, 'call=get_weather:{"city":"Oslo"', GOOD_CALL),  # not JSON
    ("invalid_tool_call", {"tools": [WEATHER]}, "call=get_weather:{}", GOOD_CALL),  # required argument missing
    ("invalid_tool_call", {"tools": [WEATHER]}, 'call=get_weather:{"city":7}', GOOD_CALL),  # wrong type
    ("missing_tool_call", {"tools": [WEATHER], "tool_choice": "required"}, "0.99", GOOD_CALL),
    ("missing_tool_call", {"tools": [WEATHER, CLOCK], "tool_choice": NAMED}, "call=get_time:{}", GOOD_CALL),
    ("unexpected_tool_call", {"tools": [WEATHER], "tool_choice": "none"}, GOOD_CALL, "0.9"),
    ("invalid_json", {"response_format": PERSON}, "answer=Ada is 36", GOOD_PERSON),
    ("schema_mismatch", {"response_format": PERSON}, 'answer={"name":"Ada"}', GOOD_PERSON),
    ("invalid_json", {"response_format": {"type": "json_object"}}, "answer=sure: {}", 'answer={"ok":true}'),
]
IDS = ["unknown-name", "not-json", "missing-argument", "wrong-type", "required", "named", "none",
       "json-schema-unparsed", "json-schema-mismatch", "json-object"]


def scrape(gateway: RunningGateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gateway.root + "/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def escalations(gateway: RunningGateway, tier: str, reason: str) -> float:
    return scrape(gateway).get(("recserve_escalations_total", frozenset({"tier": tier, "reason": reason}.items())), 0)


def served_invalid(gateway: RunningGateway, tier: str, reason: str) -> float:
    labels = frozenset({"tier": tier, "reason": reason}.items())
    return scrape(gateway).get(("recserve_invalid_answers_served_total", labels), 0)


def streamed(sdk: openai.OpenAI, prompt: str, **kwargs: Any) -> tuple[list[Any], httpx.Headers]:
    raw = sdk.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "recserve"), messages=[{"role": "user", "content": prompt}], stream=True, **kwargs)
    return list(raw.parse()), raw.headers


def calls_of(chunks: list[Any]) -> list[tuple[str | None, str | None, str]]:
    """(id, name, arguments) of every tool call in a stream, fragments joined by index."""
    found: dict[int, list[Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or ():
                entry = found.setdefault(fragment.index, [None, None, ""])
                entry[0] = entry[0] or fragment.id
                entry[1] = entry[1] or (fragment.function.name if fragment.function else None)
                entry[2] += (fragment.function.arguments or "") if fragment.function else ""
    return [tuple(found[i]) for i in sorted(found)]  # type: ignore[misc]


def assert_edge_answer(message: Any, good: str) -> None:
    if good.startswith("call="):
        assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
            ("get_weather", '{"city":"Oslo"}')]
        assert message.tool_calls[0].id.startswith("call_edge_")
    elif good.startswith("answer="):
        assert message.content == good.removeprefix("answer=")
    else:
        assert message.content == "edge says" and not message.tool_calls


@pytest.mark.parametrize(("reason", "fields", "bad", "good"), CASES, ids=IDS)
def test_an_invalid_lower_answer_escalates_with_its_reason(gateway: RunningGateway, client: openai.OpenAI,
                                                           reason: str, fields: dict[str, Any], bad: str,
                                                           good: str) -> None:
    answer, headers = ask(client, f"q [device:{bad}][edge:{good}]", **fields)
    assert headers["x-recserve-path"] == f"device({reason})>edge" and headers["x-recserve-tier"] == "edge"
    assert_edge_answer(answer.choices[0].message, good)
    assert escalations(gateway, "device", reason) == 1


@pytest.mark.parametrize(("reason", "fields", "bad", "good"), CASES, ids=IDS)
def test_a_streamed_invalid_lower_answer_escalates(client: openai.OpenAI, reason: str, fields: dict[str, Any],
                                                   bad: str, good: str) -> None:
    chunks, headers = streamed(client, f"q [device:{bad}][edge:{good}]", **fields)
    assert headers["x-recserve-path"] == f"device({reason})>edge" == summary_of(chunks)["path"]
    assert "device" not in text_of(chunks) and all(not (i or "").startswith("call_device") for i, _, _ in
                                                    calls_of(chunks))
    if good.startswith("call="):
        assert [(name, arguments) for _, name, arguments in calls_of(chunks)] == [("get_weather", '{"city":"Oslo"}')]
    elif good.startswith("answer="):
        assert text_of(chunks) == good.removeprefix("answer=")


def test_valid_confident_lower_answers_are_kept(client: openai.OpenAI) -> None:
    answer, headers = ask(client, f"q [device:{GOOD_CALL}]", tools=[WEATHER, CLOCK], tool_choice="required")
    assert headers["x-recserve-path"] == "device"
    assert answer.choices[0].message.tool_calls[0].function.arguments == '{"city":"Oslo"}'
    answer, headers = ask(client, f"q [device:{GOOD_PERSON}]", response_format=PERSON)
    assert headers["x-recserve-path"] == "device" and json.loads(answer.choices[0].message.content)["age"] == 36
    chunks, headers = streamed(client, f"q [device:{GOOD_CALL}]", tools=[WEATHER], tool_choice=NAMED)
    assert headers["x-recserve-path"] == "device"
    assert calls_of(chunks) == [("call_device_0_0", "get_weather", '{"city":"Oslo"}')]


def test_invalid_answers_never_enter_the_window(client: openai.OpenAI) -> None:
    for _ in range(3):  # confident, broken: were they counted, 0.2 would be far below the window's β quantile
        _, headers = ask(client, "q [device:0.99][device:call=get_weather:{}]", tools=[WEATHER])
        assert headers["x-recserve-path"] == "device(invalid_tool_call)>edge"
    _, headers = ask(client, f"q [device:0.2][device:{GOOD_CALL}]", tools=[WEATHER])
    assert headers["x-recserve-path"] == "device"  # still the first confidence the device's window holds


def test_an_invalid_answer_is_never_the_degraded_fallback(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        ask(client, "q [device:call=get_weather:{}][edge:call=nope:{}][cloud:status=500]", tools=[WEATHER])
    assert failed.value.status_code == 502
    path = failed.value.response.headers["x-recserve-path"]
    assert path == "device(invalid_tool_call)>edge(invalid_tool_call)>cloud!"


def test_the_top_tiers_invalid_answer_is_served_as_is_and_counted(gateway: RunningGateway, client: openai.OpenAI,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="recserve.access")
    answer, headers = ask(client, "q [*:answer=not json]", response_format={"type": "json_object"})
    assert headers["x-recserve-path"] == "device(invalid_json)>edge(invalid_json)>cloud"
    assert answer.choices[0].message.content == "not json"  # never repaired
    chunks, headers = streamed(client, "q [*:call=get_weather:{}]", tools=[WEATHER], model="recserve/cloud")
    assert headers["x-recserve-path"] == "cloud" and calls_of(chunks)[0][1:] == ("get_weather", "{}")
    # A stream is observed at its end: wait for the gateway to finish it after the client has it all.
    assert wait_until(lambda: served_invalid(gateway, "cloud", "invalid_tool_call") == 1)
    assert served_invalid(gateway, "cloud", "invalid_json") == 1
    assert escalations(gateway, "edge", "invalid_json") == 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "recserve.access"]
    assert [(line["tier_path"], line.get("invalid")) for line in lines] == [
        ("device(invalid_json)>edge(invalid_json)>cloud", "invalid_json"), ("cloud", "invalid_tool_call")]


def test_requests_without_structure_are_not_judged(client: openai.OpenAI) -> None:
    _, headers = ask(client, f"q [device:{GOOD_CALL}]")  # a call nobody asked for: confidence judges it
    assert headers["x-recserve-path"] == "device"


@pytest.fixture
def early(start_gateway: GatewayStarter) -> RunningGateway:
    return start_gateway({"streaming": {"mode": "early", "decide_after_tokens": 2}})


def test_early_commit_reads_a_tool_call_whole_before_deciding(early: RunningGateway) -> None:
    broken = 'call=get_weather:{"city": "Oslo", "days": 3, "units": "metric"'  # 16 tokens, never closed
    with early.sdk() as sdk:
        chunks, headers = streamed(sdk, f"q [device:{broken}][edge:{GOOD_CALL}]", tools=[WEATHER])
        assert headers["x-recserve-path"] == "device(invalid_tool_call)>edge"
        assert calls_of(chunks) == [("call_edge_0_0", "get_weather", '{"city":"Oslo"}')]  # no device fragment
        long_call = 'call=get_weather:{"city": "Oslo", "days": 3}'
        chunks, headers = streamed(sdk, f"q [device:{long_call}]", tools=[WEATHER])
        assert headers["x-recserve-path"] == "device"
        assert calls_of(chunks) == [("call_device_0_0", "get_weather", '{"city": "Oslo", "days": 3}')]
        # Text still commits early (and is not judged): the prefix's confidence decides.
        chunks, headers = streamed(sdk, "q [device:tokens=0.9,0.9,0.9,0.9]", tools=[WEATHER])
        assert headers["x-recserve-path"] == "device" and text_of(chunks) == "device t1 t2 t3"


def test_early_commit_judges_json_answers_whole(early: RunningGateway) -> None:
    with early.sdk() as sdk:
        chunks, headers = streamed(sdk, f"q [device:tokens=0.9,0.9,0.9,0.9][edge:{GOOD_PERSON}]",
                                   response_format=PERSON)
        assert headers["x-recserve-path"] == "device(invalid_json)>edge"
        assert text_of(chunks) == '{"name":"Ada","age":36}'
        # The edge is sure of its call (p 1 per token), so its window keeps it whatever came before.
        chunks, headers = streamed(sdk, f"q [device:tokens=0.9,0.9,0.9][edge:{GOOD_CALL}][edge:1]",
                                   tools=[WEATHER], tool_choice="required")
        assert headers["x-recserve-path"] == "device(missing_tool_call)>edge"
        assert calls_of(chunks) == [("call_edge_0_0", "get_weather", '{"city":"Oslo"}')]


def test_a_schema_the_validator_refuses_is_not_checked_and_not_an_error(client: openai.OpenAI) -> None:
    lookaround = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "pattern": "^(?!x)"}}, "required": ["city"]}}}
    _, headers = ask(client, "q [device:call=get_weather:{}]", tools=[lookaround])
    assert headers["x-recserve-path"] == "device"  # its arguments cannot be checked against that schema
    _, headers = ask(client, "q [device:call=get_weather:nope][edge:call=get_weather:{}]", tools=[lookaround])
    assert headers["x-recserve-path"] == "device(invalid_tool_call)>edge"  # still a JSON object, still offered


def test_a_pinned_streamed_call_reports_the_confidence_a_whole_answer_gets(client: openai.OpenAI) -> None:
    """A stream passed on live (pinned tier) is judged in the end by its tally, with the structured
    estimator, as a whole answer is: the same number in its summary as in the header of the same answer
    asked whole."""
    prompt = f"q [device:{GOOD_CALL}]"
    _, headers = ask(client, prompt, model="recserve/device", tools=[WEATHER])
    chunks, _ = streamed(client, prompt, model="recserve/device", tools=[WEATHER])
    whole = float(headers["x-recserve-confidence"])
    assert calls_of(chunks) == [("call_device_0_0", "get_weather", '{"city":"Oslo"}')]
    assert summary_of(chunks)["confidence"] == pytest.approx(whole, abs=1e-6)
    # Asked without tools, the same answer is judged as text (the mean of its token logprobs): a different
    # number, which the stream's summary reported before it knew the request was structured.
    _, as_text = ask(client, prompt, model="recserve/device")
    assert whole < float(as_text["x-recserve-confidence"])
