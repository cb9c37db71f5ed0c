"""The code agreement measure: what it ignores (comments, docstrings, prose, variable names) and what
it does not (operators, order, calls)."""

from __future__ import annotations

from policies.code_similarity import bag_f1, code_similarity, code_tokens, extract_code, is_code_answer, similarity

BASE = '''Sure:
```python
from typing import List


def below_zero(ops: List[int]) -> bool:
    """Whether the balance ever drops below zero."""
    balance = 0  # start empty
    for op in ops:
        balance += op
        if balance < 0:
            return True
    return False
```
It adds the operations one by one.'''


def _code(text: str) -> str:
    return f"```python\n{text}\n```"


def test_the_first_block_with_a_function_is_the_code() -> None:
    answer = "```\npip install nothing\n```\nthen\n```py\ndef f():\n    return 1\n```"
    assert extract_code(answer) == "def f():\n    return 1"
    assert extract_code("def g(): pass") == "def g(): pass"


def test_comments_docstrings_and_prose_do_not_count() -> None:
    bare = _code("from typing import List\n\n\ndef below_zero(ops: List[int]) -> bool:\n    balance = 0\n"
                 "    for op in ops:\n        balance += op\n        if balance < 0:\n            return True\n"
                 "    return False")
    assert code_tokens(BASE) == code_tokens(bare)
    assert code_similarity(BASE, bare) == 1.0


def test_renaming_equates_variable_names_but_not_the_function_name() -> None:
    renamed = BASE.replace("balance", "total").replace(" op", " x").replace("(op", "(x")
    assert similarity(BASE, renamed, rename=True) == 1.0
    assert code_similarity(BASE, renamed) < 1.0  # the chosen measure compares names as written
    other_name = BASE.replace("below_zero", "under_zero")
    assert similarity(BASE, other_name, rename=True) < 1.0
    assert "len" in code_tokens(_code("def f(xs):\n    n = len(xs)\n    return n"))


def test_a_changed_operator_or_order_lowers_the_score() -> None:
    flipped = BASE.replace("balance < 0", "balance > 0")
    assert 0.9 < code_similarity(BASE, flipped) < 1.0
    # The same tokens in another order: equal bags (what code_similarity sees), a lower sequence score.
    swapped = BASE.replace("            return True\n    return False", "            return False\n    return True")
    assert bag_f1(code_tokens(BASE), code_tokens(swapped)) == code_similarity(BASE, swapped) == 1.0
    assert similarity(BASE, swapped, "sequence") < 1.0


def test_unrelated_code_scores_low_and_nothing_raises_on_broken_code() -> None:
    other = _code("import re\n\ndef words(s):\n    return re.findall(r'\\w+', s.lower())")
    assert code_similarity(BASE, other) < 0.4
    broken = "```python\ndef below_zero(ops):\n    balance = (0\n    for op in ops:\n"
    assert 0.0 < code_similarity(BASE, broken) < 1.0
    assert code_similarity("", "") == 1.0
    assert code_similarity(BASE, "") == 0.0


def test_code_answers_are_told_from_prose() -> None:
    assert is_code_answer(BASE)
    assert is_code_answer("```\nclass A:\n    pass\n```")
    assert not is_code_answer("The answer is 42.")
    assert not is_code_answer("```\npip install x\n```")
    assert not is_code_answer("def f(): in prose, no fence")
