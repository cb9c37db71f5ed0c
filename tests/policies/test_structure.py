"""Validity of structured answers (policies/structure.py, policies/schemas.py): what a request asks,
how answers are read, and every reason an answer is invalid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from policies.schemas import MAX_CACHED_SCHEMA_BYTES, SchemaValidators, canonical, compile_schema
from policies.structure import (
    INVALID_REASONS,
    MAX_CALLS,
    Expectation,
    expectation_of,
    problem,
    tool_calls_of,
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                         "days": {"type": "integer"}},
                                          "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}  # no parameters: any object
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def call(name: Any, arguments: Any) -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}


def calls(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": list(entries)}}]


def text(content: Any) -> list[dict[str, Any]]:
    return [{"index": 0, "message": {"role": "assistant", "content": content}}]


def expect(**body: Any) -> Expectation:
    expectation = expectation_of(body)
    assert expectation is not None
    return expectation


def test_requests_without_structure_ask_nothing() -> None:
    assert expectation_of({"messages": []}) is None
    assert expectation_of({"tools": [], "response_format": {"type": "text"}}) is None
    assert expectation_of({"response_format": "json"}) is None


def test_reasons_are_the_documented_five() -> None:
    assert INVALID_REASONS == ("invalid_tool_call", "missing_tool_call", "unexpected_tool_call", "invalid_json",
                               "schema_mismatch")


@pytest.mark.parametrize(("choices", "reason"), [
    (calls(call("get_weather", '{"city": "Oslo"}')), None),
    (calls(call("get_weather", '{"city": "Oslo", "days": 3}'), call("get_time", "{}")), None),
    (calls(call("get_time", "")), None),  # llama.cpp's empty arguments of a call without any
    (calls(call("get_time", {"tz": "UTC"})), None),  # the object itself rather than its text
    (text("It is sunny."), None),  # tool_choice auto: text is an answer
    (calls(call("get_forecast", '{"city": "Oslo"}')), "invalid_tool_call"),  # not offered
    (calls(call("get_weather", '{"city": "Oslo"')), "invalid_tool_call"),  # not JSON
    (calls(call("get_weather", '["Oslo"]')), "invalid_tool_call"),  # not an object
    (calls(call("get_weather", '{"days": 3}')), "invalid_tool_call"),  # required argument missing
    (calls(call("get_weather", '{"city": 7}')), "invalid_tool_call"),  # wrong type
    (calls(call("get_weather", '{"city": "Oslo", "days": NaN}')), "invalid_tool_call"),  # NaN is not JSON
    (calls(call(None, "{}")), "invalid_tool_call"),
    (calls({"type": "function"}), "invalid_tool_call"),
    (calls(call("get_weather", 5)), "invalid_tool_call"),
    ([{"index": 0, "message": None}], "invalid_tool_call"),
])
def test_tool_calls_under_tool_choice_auto(choices: list[dict[str, Any]], reason: str | None) -> None:
    assert problem(expect(tools=[WEATHER, CLOCK]), choices) == reason


def test_tool_choice_required_named_and_none() -> None:
    required = expect(tools=[WEATHER, CLOCK], tool_choice="required")
    assert problem(required, text("Sunny.")) == "missing_tool_call"
    assert problem(required, calls(call("get_time", "{}"))) is None
    named = expect(tools=[WEATHER, CLOCK], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert problem(named, text("Sunny.")) == "missing_tool_call"
    assert problem(named, calls(call("get_time", "{}"))) == "missing_tool_call"
    assert problem(named, calls(call("get_weather", '{"city": "Oslo"}'))) is None
    none = expect(tools=[WEATHER], tool_choice="none")
    assert problem(none, calls(call("get_weather", '{"city": "Oslo"}'))) == "unexpected_tool_call"
    assert problem(none, text("Sunny.")) is None
    single = expect(tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    assert problem(single, calls(call("get_time", "{}"), call("get_time", "{}"))) == "invalid_tool_call"


def test_calls_the_token_limit_cut_are_not_whole_calls() -> None:
    expectation = expect(tools=[WEATHER, CLOCK])
    cut = [{**calls(call("get_time", ""))[0], "finish_reason": "length"}]  # cut before its arguments
    assert problem(expectation, cut) == "invalid_tool_call"
    assert problem(expectation, [{**cut[0], "finish_reason": "tool_calls"}]) is None
    long_text = [{**text("It is sunny and")[0], "finish_reason": "length"}]
    assert problem(expectation, long_text) is None  # text cut by the limit is an answer, as from any tier


def test_a_call_where_no_tools_were_offered_is_unexpected() -> None:
    assert problem(expect(response_format={"type": "json_object"}), calls(call("f", "{}"))) == "unexpected_tool_call"


def test_every_choice_must_be_valid() -> None:
    expectation = expect(tools=[WEATHER])
    good = calls(call("get_weather", '{"city": "Oslo"}'))[0]
    bad = {**calls(call("get_weather", "{}"))[0], "index": 1}
    assert problem(expectation, [good, good]) is None
    assert problem(expectation, [good, bad]) == "invalid_tool_call"


@pytest.mark.parametrize(("content", "reason"), [
    ('{"name": "Ada", "age": 36}', None),
    ('  {"name": "Ada", "age": 36}\n', None),
    ('```json\n{"name": "Ada", "age": 36}\n```', "invalid_json"),
    ('{"name": "Ada", "age": 36', "invalid_json"),
    (None, "invalid_json"),
    ('{"name": "Ada"}', "schema_mismatch"),
    ('{"name": "Ada", "age": "36"}', "schema_mismatch"),
    ('{"name": "Ada", "age": 36, "extra": 1}', "schema_mismatch"),
    ("[" * 100_000, "invalid_json"),
])
def test_json_schema_answers(content: Any, reason: str | None) -> None:
    expectation = expect(response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON,
                                                                                   "strict": True}})
    assert problem(expectation, text(content)) == reason


def test_json_object_answers_must_parse_and_a_refusal_is_an_answer() -> None:
    expectation = expect(response_format={"type": "json_object"})
    assert problem(expectation, text('{"anything": [1, 2]}')) is None
    assert problem(expectation, text("Sure! Here it is: {}")) == "invalid_json"
    refusal = [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't help."}}]
    assert problem(expectation, refusal) is None


def test_answers_of_any_shape_never_raise() -> None:
    expectation = expect(tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"})
    for choices in (None, "x", [], [None], [1], [{"message": []}], [{"message": {"tool_calls": "x"}}],
                    [{"message": {"tool_calls": [None, 1, {"function": []}]}}],
                    [{"message": {"function_call": {"name": "get_weather", "arguments": '{"city": "x"}'}}}]):
        problem(expectation, choices)
    assert tool_calls_of(None) == [] and tool_calls_of({"tool_calls": {}}) == []
    legacy = tool_calls_of({"function_call": {"name": "get_weather", "arguments": '{"city": "x"}'}})
    assert legacy[0].name == "get_weather" and legacy[0].parsed == {"city": "x"}


def test_too_many_calls_is_invalid() -> None:
    many = calls(*[call("get_time", "{}")] * (MAX_CALLS + 1))
    assert problem(expect(tools=[CLOCK]), many) == "invalid_tool_call"


def test_tools_we_cannot_read_make_unknown_names_acceptable() -> None:
    expectation = expect(tools=[WEATHER, {"type": "custom", "custom": {"name": "grep"}}])
    assert problem(expectation, calls(call("grep", "{}"))) is None
    assert problem(expectation, calls(call("get_weather", "{}"))) == "invalid_tool_call"


def test_a_schema_the_validator_refuses_is_not_checked() -> None:
    lookaround = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "pattern": "(?=a)b"}}, "required": ["q"]}}}
    remote = {"type": "function", "function": {"name": "g", "parameters": {"$ref": "http://127.0.0.1:9/schema.json"}}}
    broken = {"type": "function", "function": {"name": "h", "parameters": {"type": "bogus"}}}
    expectation = expect(tools=[lookaround, remote, broken])
    assert all(tool.check is None for tool in expectation.tools.values())
    assert problem(expectation, calls(call("f", '{"q": 1}'), call("g", "{}"), call("h", "{}"))) is None
    assert problem(expectation, calls(call("f", "nope"))) == "invalid_tool_call"  # still JSON objects only


def test_a_hostile_pattern_cannot_hang_the_check() -> None:
    evil = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "pattern": "^(a+)+$"}}}}}
    # A backtracking engine would need about 2^5000 steps: this returns at all only on a linear-time one.
    arguments = json.dumps({"q": "a" * 5000 + "!"})
    assert problem(expect(tools=[evil]), calls(call("f", arguments))) == "invalid_tool_call"


def test_validators_are_cached_by_canonical_schema_and_bounded() -> None:
    validators = SchemaValidators(max_schemas=2)
    first = validators.get({"type": "object", "required": ["a"]})
    assert validators.get({"required": ["a"], "type": "object"}) is first  # same schema, keys reordered
    assert canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    validators.get({"type": "string"})
    validators.get({"type": "number"})
    assert len(validators) == 2
    huge = {"type": "object", "description": "x" * MAX_CACHED_SCHEMA_BYTES}
    assert validators.get(huge) is not None and len(validators) == 2  # compiled, not kept
    assert validators.get({"type": "object", "x": float("nan")}) is None  # not JSON: not checked
    assert compile_schema("not a schema") is None


def test_expectation_uses_the_cache() -> None:
    validators = SchemaValidators()
    expectation_of({"tools": [WEATHER]}, validators)
    expectation_of({"tools": [WEATHER]}, validators)
    assert len(validators) == 1
