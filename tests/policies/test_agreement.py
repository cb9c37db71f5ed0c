"""Agreement of structured answers: tool calls as calls, JSON answers as values (BFCL's normalisation)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.agreement import expects_json, json_answers_agree, standardize_string, tool_calls_agree


def call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


AREA = call("calculate_area", {"base": 10, "height": 5})
WEATHER = call("get_weather", {"city": "Paris", "unit": "celsius"})


def test_identical_calls_agree_whatever_their_ids() -> None:
    assert tool_calls_agree([AREA], [call("calculate_area", '{"height": 5, "base": 10}', "call_xyz")])


def test_parallel_calls_agree_in_any_order_but_not_in_other_numbers() -> None:
    assert tool_calls_agree([AREA, WEATHER], [WEATHER, AREA])
    assert not tool_calls_agree([AREA, WEATHER], [AREA])
    assert not tool_calls_agree([AREA, AREA], [AREA])  # a multiset: the same call twice is two calls
    assert not tool_calls_agree([AREA, AREA, WEATHER], [AREA, WEATHER, WEATHER])


def test_numbers_agree_by_value() -> None:
    assert tool_calls_agree([AREA], [call("calculate_area", {"base": 10.0, "height": 5.0})])
    assert not tool_calls_agree([AREA], [call("calculate_area", {"base": 10, "height": 6})])
    # A number is not its text, nor a boolean: types stay apart.
    assert not tool_calls_agree([call("f", {"x": 5})], [call("f", {"x": "5"})])
    assert not tool_calls_agree([call("f", {"x": 1})], [call("f", {"x": True})])


def test_strings_agree_after_bfcl_normalisation() -> None:
    assert tool_calls_agree([call("get_weather", {"city": "New York"})], [call("get_weather", {"city": "new york"})])
    assert tool_calls_agree([call("f", {"d": "2024-01-05"})], [call("f", {"d": "2024/01/05"})])
    assert standardize_string("It's New_York, U.S.A.") == 'it"snewyorkusa'
    assert not tool_calls_agree([call("get_weather", {"city": "New York"})], [call("get_weather", {"city": "Newark"})])


def test_other_values_names_or_keys_disagree() -> None:
    assert not tool_calls_agree([WEATHER], [call("get_weather", {"city": "London", "unit": "celsius"})])
    assert not tool_calls_agree([WEATHER], [call("get_forecast", {"city": "Paris", "unit": "celsius"})])
    assert not tool_calls_agree([WEATHER], [call("get_weather", {"town": "Paris", "unit": "celsius"})])
    assert not tool_calls_agree([WEATHER], [call("get_weather", {"city": "Paris"})])  # a missing argument


def test_lists_compare_element_wise_and_objects_key_wise() -> None:
    nested = {"points": [[0, 1], [2.0, 3]], "opts": {"Mode": "Fast Lane", "deep": {"k": None}}}
    same = {"opts": {"deep": {"k": None}, "Mode": "fast-lane"}, "points": [[0.0, 1], [2, 3]]}
    assert tool_calls_agree([call("f", nested)], [call("f", same)])
    assert not tool_calls_agree([call("f", {"xs": [1, 2]})], [call("f", {"xs": [2, 1]})])  # order is meaning
    assert not tool_calls_agree([call("f", {"xs": [1, 2]})], [call("f", {"xs": [1, 2, 2]})])


@pytest.mark.parametrize("arguments", ['{"city": "Paris"', "", "city=Paris", '{"x": NaN}', "[" * 5000])
def test_arguments_that_are_not_json_agree_with_nothing(arguments: str) -> None:
    broken = call("get_weather", arguments)
    assert not tool_calls_agree([broken], [broken])
    assert not tool_calls_agree([broken], [WEATHER])


@pytest.mark.parametrize("malformed", [
    "not a list", [None], [{"type": "function"}], [{"function": {"name": 3, "arguments": "{}"}}],
    [{"function": {"name": "f", "arguments": 7}}], [{"function": {"name": "f", "arguments": {"x": {1, 2}}}}],
])
def test_calls_that_cannot_be_read_agree_with_nothing(malformed: Any) -> None:
    assert not tool_calls_agree(malformed, malformed)
    assert not tool_calls_agree(malformed, [AREA])


def test_arguments_sent_as_an_object_are_read_as_the_value() -> None:
    as_object = {"id": "c", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": {"city": "paris", "unit": "Celsius"}}}
    assert tool_calls_agree([as_object], [WEATHER])


def test_a_call_never_agrees_with_a_text_answer() -> None:
    assert not tool_calls_agree([AREA], None)
    assert not tool_calls_agree(None, [AREA])


def test_json_answers_compare_as_values() -> None:
    assert json_answers_agree('{"city": "New York", "days": 3}', ' {"days": 3.0, "city": "new york"}\n')
    assert not json_answers_agree('{"city": "New York", "days": 3}', '{"city": "New York", "days": 4}')
    assert not json_answers_agree('{"a": 1}', '{"a": 1')  # unparsable never agrees
    assert not json_answers_agree("Sure! {}", "Sure! {}")
    assert not json_answers_agree("", "")


def test_which_response_formats_ask_for_json() -> None:
    assert expects_json({"type": "json_object"})
    assert expects_json({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
    assert not expects_json({"type": "text"}) and not expects_json(None) and not expects_json("json_object")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_agrees_with_itself_however_it_is_written(value: Any) -> None:
    compact, spaced = json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False)
    assert json_answers_agree(compact, spaced)
    assert tool_calls_agree([call("f", compact)], [call("f", spaced)])


@given(st.text(max_size=40), st.text(max_size=40))
def test_arbitrary_text_never_raises(a: str, b: str) -> None:
    json_answers_agree(a, b)
    tool_calls_agree([call("f", a)], [call("f", b)])
