"""What counts as agreement when a probe compares a lower tier's answer with the top tier's."""

from __future__ import annotations

from gateway.cascade.probes import agree


def _answer(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


SUM_A = "Here you go:\n```python\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n```"
SUM_B = ("Sure! This adds the numbers up.\n```python\ndef total(values):\n    acc = 0\n"
         "    for v in values:  # each one\n        acc += v\n    return acc\n```\nIt runs in O(n).")
OTHER = ("```python\ndef total(xs):\n    seen = sorted(set(xs))\n    if not seen:\n        return None\n"
         "    return seen[len(seen) // 2]\n```")


def test_code_answers_are_compared_as_code() -> None:
    # Same code, other names, other prose and comments: agree (raw-text token-F1 would not: the words
    # around and inside the code differ).
    assert agree("generation", None, _answer(SUM_A), _answer(SUM_B), similarity=0.5)
    # Other code under the same name: no agreement, however alike the surrounding words.
    assert not agree("generation", None, _answer(SUM_A), _answer("Here you go:\n" + OTHER), similarity=0.5)


def test_prose_is_compared_by_token_f1_and_labels_by_label() -> None:
    assert agree("generation", None, _answer("The answer is 42."), _answer("the answer is 42"), similarity=0.5)
    assert not agree("generation", None, _answer("It is 41."), _answer("The answer is 42, clearly."),
                     similarity=0.5)
    assert agree("classification", ["positive", "negative"], _answer("Positive"), _answer("positive."),
                 similarity=0.5)


def _calls(*made: tuple[str, str], content: str | None = None) -> dict[str, object]:
    """An answer with tool calls, in the form probes receive both plain and streamed answers."""
    tool_calls = [{"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
                  for i, (name, arguments) in enumerate(made)]
    return {"choices": [{"message": {"content": content, "tool_calls": tool_calls}}]}


def test_tool_calls_are_compared_as_calls_whatever_the_task_or_text() -> None:
    paris = _calls(("get_weather", '{"city": "Paris"}'))
    london = _calls(("get_weather", '{"city": "London"}'), content="")
    assert not agree("generation", None, paris, london, similarity=0.5)  # two empty texts used to agree
    assert not agree("classification", None, paris, london, similarity=0.5)
    assert agree("generation", None, paris, _calls(("get_weather", '{"city": "paris"}'), content="Sure."),
                 similarity=0.5)
    assert not agree("generation", None, paris, _answer("get_weather Paris"), similarity=0.5)


def test_json_answers_are_compared_as_values_when_json_was_asked_for() -> None:
    one, two = _answer('{"city": "Paris", "n": 1}'), _answer('{"city": "Paris", "n": 2}')
    assert agree("generation", None, one, two, similarity=0.5)  # as text: most words shared
    assert not agree("generation", None, one, two, similarity=0.5, response_format={"type": "json_object"})
    assert agree("generation", None, one, _answer('{"n": 1.0, "city": "paris"}'), similarity=0.5,
                 response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": {}}})
