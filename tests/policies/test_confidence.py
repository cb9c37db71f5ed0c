"""Logprob parsing of every layout and the task-specific estimators."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.confidence import (
    classification_confidence,
    generation_confidence,
    parse_logprobs,
    response_confidence,
)


def chat_token(token: str, p: float, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    return {"token": token, "logprob": math.log(p), "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in (top or [(token, p)])]}


def test_chat_layout_generation_is_inverse_perplexity() -> None:
    logprobs = {"content": [chat_token("a", 0.5), chat_token("b", 0.8), chat_token("c", 0.9)]}
    expected = math.exp((math.log(0.5) + math.log(0.8) + math.log(0.9)) / 3)
    assert response_confidence("generation", [{"logprobs": logprobs}], None) == pytest.approx(expected, abs=1e-15)


def test_legacy_completions_layout() -> None:
    logprobs = {"tokens": [" yes", "!"], "token_logprobs": [math.log(0.6), math.log(0.9)],
                "top_logprobs": [{" yes": math.log(0.6), " no": math.log(0.3)}, {"!": math.log(0.9)}],
                "text_offset": [0, 4]}
    tokens = parse_logprobs(logprobs)
    assert tokens is not None and [t.token for t in tokens] == [" yes", "!"]
    assert response_confidence("classification", [{"logprobs": logprobs}], ["yes", "no"]) == pytest.approx(
        0.6 / 0.9)


def test_classification_renormalises_over_labels_and_merges_variants() -> None:
    first = chat_token(" Positive", 0.5, [(" Positive", 0.5), ("positive", 0.1), (" negative", 0.2), (" The", 0.2)])
    value = classification_confidence(parse_logprobs({"content": [first]}) or [], ["positive", "negative"])
    assert value == pytest.approx(0.6 / 0.8)


def test_classification_matches_label_prefix_tokens_and_skips_leading_whitespace() -> None:
    newline = chat_token("\n", 0.99)
    first = chat_token("not", 0.7, [("not", 0.7), ("ent", 0.3)])
    tokens = parse_logprobs({"content": [newline, first]}) or []
    assert classification_confidence(tokens, ["entailment", "not_entailment"]) == pytest.approx(0.7)


def test_classification_prefix_of_two_labels_is_ambiguous_and_ignored() -> None:
    first = chat_token("n", 0.5, [("n", 0.5), ("yes", 0.25)])
    tokens = parse_logprobs({"content": [first]}) or []
    assert classification_confidence(tokens, ["no", "neutral", "yes"]) == pytest.approx(1.0)


def test_classification_without_labels_is_top1_probability() -> None:
    first = chat_token("B", 0.4, [("B", 0.4), ("A", 0.35)])
    assert classification_confidence(parse_logprobs({"content": [first]}) or [], None) == pytest.approx(0.4)


def test_classification_answer_outside_labels_has_no_confidence() -> None:
    first = chat_token("Maybe", 0.9, [("Maybe", 0.9), ("Perhaps", 0.1)])
    assert classification_confidence(parse_logprobs({"content": [first]}) or [], ["yes", "no"]) is None


@pytest.mark.parametrize("logprobs", [
    None, {}, {"content": None}, {"content": [{"token": "a"}]}, {"content": [{"token": "a", "logprob": "x"}]},
    {"content": []}, {"tokens": ["a"], "token_logprobs": []}, {"content": [{"token": "a", "logprob": True}]},
    "nonsense",
])
def test_unusable_logprobs_give_no_confidence(logprobs: Any) -> None:
    assert response_confidence("generation", [{"logprobs": logprobs}], None) is None


def test_nan_and_positive_logprobs_give_no_confidence() -> None:
    assert generation_confidence(parse_logprobs({"content": [{"token": "a", "logprob": math.nan}]}) or []) is None
    assert generation_confidence(parse_logprobs({"content": [{"token": "a", "logprob": 3.0}]}) or []) is None


def test_n_choices_confidence_is_the_minimum() -> None:
    choices = [{"logprobs": {"content": [chat_token("x", p)]}} for p in (0.9, 0.3, 0.7)]
    assert response_confidence("generation", choices, None) == pytest.approx(0.3)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=json_values, task=st.sampled_from(["classification", "generation"]),
       labels=st.none() | st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3))
def test_estimators_never_raise_and_stay_in_unit_interval(payload: Any, task: str, labels: list[str] | None) -> None:
    for choices in (payload, [{"logprobs": payload}], [{"logprobs": {"content": payload}}]):
        value = response_confidence(task, choices, labels)  # type: ignore[arg-type]
        assert value is None or 0.0 <= value <= 1.0
