"""The structured confidence estimators: which tokens write a JSON answer's values, and what they say."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.base import TokenLogprob
from policies.confidence import (
    STRUCTURED_ESTIMATOR,
    STRUCTURED_ESTIMATORS,
    answer_probability,
    generation_confidence,
    structured_confidence,
    weakest_value_confidence,
)
from policies.json_spans import value_spans

SURE = math.log(0.999)  # what a token forced by the JSON schema gets


def tokens(*pieces: tuple[str, float]) -> list[TokenLogprob]:
    return [TokenLogprob(text, logprob) for text, logprob in pieces]


def texts(text: str) -> list[str]:
    spans = value_spans(text)
    assert spans is not None
    return [text[s.start:s.end] for s in spans]


def test_value_spans_are_values_not_keys_punctuation_or_wrapper() -> None:
    call = '{"name": "calculate_area", "arguments": {"base": 10, "height": 5.5e0, "unit": "cm"}}'
    assert texts(call) == ["calculate_area", "10", "5.5e0", "cm"]
    parallel = '[{"name":"f","arguments":{"on":true,"x":null,"xs":[-1,"a\\"b"]}},{"name":"g","arguments":{}}]'
    assert texts(parallel) == ["f", "true", "null", "-1", 'a\\"b', "g"]
    assert texts('{"text": "Paris is the capital."}') == ["Paris is the capital."]
    assert texts('{"key": ""}') == ['"']  # an empty string: its closing quote says so
    assert texts('{"a" : "b:c"}') == ["b:c"]  # a colon inside a value is not a key's


def test_json_in_one_code_fence_is_read_inside_it() -> None:
    # llama.cpp writes a constrained tool call as ```json ... ```; the fence is forced like the braces.
    fenced = '```json\n{\n  "name": "f",\n  "arguments": {"a": 2}\n}\n```'
    assert [fenced[s.start:s.end] for s in value_spans(fenced) or []] == ["f", "2"]
    assert value_spans('```\n[1, "x"]\n```\n') is not None
    assert value_spans('```json\n{"a": 1}\n``` and more text') is None


@pytest.mark.parametrize("text", ["", "Paris", '{"a": 1', '{"a": NaN}', "{'a': 1}", "[" * 3000, "```json\n{'a'}\n```"])
def test_text_that_is_not_json_has_no_spans(text: str) -> None:
    assert value_spans(text) is None


# `{"name":"calculate_area","arguments":{"base":10}}` as a tokenizer might split it: tokens straddle the
# edges of values (`":"`, `"}`), the name is three tokens.
SPLIT = tokens(('{"', SURE), ("name", SURE), ('":"', SURE), ("calc", math.log(0.5)), ("ulate", math.log(0.8)),
               ('_area","', SURE), ("arguments", SURE), ('":{"', SURE), ("base", SURE), ('":', SURE),
               ("1", math.log(0.4)), ('0}', math.log(0.9)), ("}", SURE))


def test_tokens_overlapping_a_value_count_even_when_split_across_its_edge() -> None:
    # Value tokens: calc, ulate, `_area","` (its `_area` is in the name) for the name; `1`, `0}` for 10.
    name = [math.log(0.5), math.log(0.8), SURE]
    base = [math.log(0.4), math.log(0.9)]
    assert structured_confidence(SPLIT) == pytest.approx(math.exp(sum(name + base) / 5))
    assert weakest_value_confidence(SPLIT) == pytest.approx(math.exp(min(sum(name) / 3, sum(base) / 2)))


def test_forced_tokens_no_longer_drown_the_free_ones() -> None:
    # A call whose one free decision (the city) was a coin toss, wrapped in 20 forced tokens.
    wrapper_before = ['{"', "name", '":', ' "', "get", "_weather", '",', ' "', "arguments", '":', ' {"', "city", '":',
                      ' "']
    answer = tokens(*[(t, SURE) for t in wrapper_before], ("Par", math.log(0.3)), ("is", math.log(0.6)),
                    ('"}}', SURE))
    whole = generation_confidence(answer)
    assert whole is not None and whole > 0.85  # every token, punctuation included: looks sure
    # The name's two sure tokens and the city's two unsure ones.
    assert structured_confidence(answer) == pytest.approx((0.999 * 0.999 * 0.3 * 0.6) ** (1 / 4))
    weakest = weakest_value_confidence(answer)
    assert weakest == pytest.approx(math.sqrt(0.3 * 0.6))  # the city alone: the coin toss


def test_the_weakest_value_decides_the_min_variant() -> None:
    answer = tokens(('{"a": ', SURE), ("1", math.log(0.99)), (', "b": ', SURE), ("2", math.log(0.99)),
                    (', "c": ', SURE), ("3", math.log(0.2)), ("}", SURE))
    assert weakest_value_confidence(answer) == pytest.approx(0.2)
    assert structured_confidence(answer) == pytest.approx((0.99 * 0.99 * 0.2) ** (1 / 3))


@pytest.mark.parametrize("estimator", [structured_confidence, weakest_value_confidence])
def test_falls_back_to_generation_confidence(estimator: Any) -> None:
    prose = tokens(("Paris", math.log(0.5)), (" it is", math.log(0.9)))
    assert estimator(prose) == pytest.approx(generation_confidence(prose))
    no_values = tokens(("{", math.log(0.7)), ('"a": {}', math.log(0.9)), ("}", SURE))
    assert estimator(no_values) == pytest.approx(generation_confidence(no_values))


@pytest.mark.parametrize("estimator", STRUCTURED_ESTIMATORS.values())
def test_odd_tokens_give_no_estimate_not_an_exception(estimator: Any) -> None:
    assert estimator([]) is None
    assert estimator(tokens(('{"a": ', SURE), ("1", math.nan), ("}", SURE))) is None
    assert estimator(tokens(('{"a": ', SURE), ("1", 0.5), ("}", SURE))) is None  # a positive logprob
    assert estimator([TokenLogprob(None, -0.1), TokenLogprob("1", -0.1)]) is None  # type: ignore[arg-type]
    assert estimator([TokenLogprob("1", "x")]) is None  # type: ignore[arg-type]
    assert estimator([TokenLogprob("1", -10**400)]) is None  # no float holds it


@pytest.mark.parametrize("estimator", [structured_confidence, weakest_value_confidence])
def test_tokens_that_write_nothing_are_no_value_s(estimator: Any) -> None:
    assert estimator(tokens(("", -0.1), ("7", -0.2), ("", -5.0))) == pytest.approx(math.exp(-0.2))


def test_the_estimators_are_exposed_by_name_and_callable_with_tokens_alone() -> None:
    assert set(STRUCTURED_ESTIMATORS) == {"structured_joint", "structured_mean", "structured_min"}
    assert STRUCTURED_ESTIMATORS["structured_mean"](SPLIT) == structured_confidence(SPLIT)
    assert STRUCTURED_ESTIMATORS[STRUCTURED_ESTIMATOR] is answer_probability


def test_the_answer_s_probability_counts_every_choice_and_no_forced_token() -> None:
    call = [('{"name": "', 0.0), ("f", math.log(0.9)), ('", "arguments": {"a": ', 0.0), ("7", math.log(0.8)),
            ("}}", 0.0)]
    assert answer_probability(tokens(*call)) == pytest.approx(0.9 * 0.8)
    # Twenty more forced tokens change nothing (a mean would drift towards 1).
    padded = [*call[:-1], *[(" ", 0.0)] * 20, call[-1]]
    assert answer_probability(tokens(*padded)) == pytest.approx(0.9 * 0.8)
    # A choice of form the value estimators cannot see: one call, or a list of several ("[" at p 0.6).
    as_list = [("[", math.log(0.6)), *call, ("]", 0.0)]
    assert answer_probability(tokens(*as_list)) == pytest.approx(0.6 * 0.9 * 0.8)
    assert structured_confidence(tokens(*as_list)) == pytest.approx(structured_confidence(tokens(*call)))


@given(st.lists(st.tuples(st.text(max_size=6), st.floats(max_value=0.0) | st.floats()), max_size=30))
def test_any_tokens_give_a_probability_or_none(pieces: list[tuple[str, float]]) -> None:
    for estimator in STRUCTURED_ESTIMATORS.values():
        value = estimator(tokens(*pieces))
        assert value is None or 0.0 <= value <= 1.0


def test_a_response_asked_for_as_structure_is_judged_by_its_probability() -> None:
    from policies.confidence import response_confidence

    # `{"name": "f", "arguments": {"a": 7}}` with its form forced (p 1) and its two values unsure.
    pieces = [('{"name": "', 0.0), ("f", math.log(0.5)), ('", "arguments": {"a": ', 0.0), ("7", math.log(0.5)),
              ("}}", 0.0)]
    choices = [{"logprobs": {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in pieces]}}]
    assert response_confidence("generation", choices, None, structured=True) == pytest.approx(0.25)
    assert response_confidence("generation", choices, None) == pytest.approx(math.exp(2 * math.log(0.5) / 5))
