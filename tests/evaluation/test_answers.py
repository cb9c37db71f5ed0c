"""Answer checking: label match for classification, the final number for GSM8K."""

from __future__ import annotations

import pytest

from gateway.evaluation.datasets import Example, final_number, is_correct, predicted_label


@pytest.mark.parametrize(("answer", "expected"), [
    ("positive", "positive"), (" Negative.", "negative"), ("POSITIVE!", "positive"),
    ("The sentiment is", None), ("neutral", None), ("", None),
])
def test_sentiment_labels(answer: str, expected: str | None) -> None:
    assert predicted_label(answer, ["positive", "negative"]) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ("A", "A"), ("B.", "B"), ("(C)", "C"), ("d) sharks", "D"), ("As the text says", None), ("An", None),
])
def test_letter_labels_must_stand_alone(answer: str, expected: str | None) -> None:
    assert predicted_label(answer, ["A", "B", "C", "D"]) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18.", "18"),
    ("The answer is $1,250.", "1250"),
    ("So she pays 3.5 dollars", "3.5"),
    ("First 12, then 7, the answer is -4 because", "-4"),
    ("no digits at all", None),
    ("so the profit is \\(\\boxed{70,000}\\) dollars, 3 more", "70000"),
])
def test_final_number(text: str, expected: str | None) -> None:
    assert final_number(text) == expected


def test_is_correct_for_both_tasks() -> None:
    cls = Example("sst2", 0, "p", "classification", ("positive", "negative"), "negative", 3)
    gen = Example("gsm8k", 0, "p", "generation", None, "1250", 200)
    assert is_correct(cls, " negative") and not is_correct(cls, "positive")
    assert is_correct(gen, "... The answer is 1,250.") and not is_correct(gen, "The answer is 125.")
    assert not is_correct(gen, "I cannot tell")
