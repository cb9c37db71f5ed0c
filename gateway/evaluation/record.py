"""`recserve eval record`: every example through every tier, via the gateway's tier-pinned models.

One JSON line per (example, tier): the prompt's tokens (the tier's own `usage`) and UTF-8 bytes, the
answer and its raw logprobs, the confidence computed with the gateway's estimator (and the one the
gateway put in `x-recserve-confidence`, which must agree), whether it is correct, and the latency the
client saw. Lines are appended as they come, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import openai

from gateway.evaluation.datasets import Example, is_correct
from policies.confidence import response_confidence

TIERS = ("device", "edge", "cloud")
# Datasets whose requests name their workload (`recserve.workload`); the others keep the task-derived
# workload so their recorded requests stay what they were.
NAMED_WORKLOADS = frozenset({"humaneval"})
# What a trace row says about an answer's correctness: at least `correct`, maybe more (the sandbox's verdict).
Scorer = Callable[[Example, str], dict[str, Any]]
# Header and estimator both print a float; they agree when they are the same number up to print noise.
_AGREE_TOLERANCE = 1e-9


def open_text(path: Path, mode: str = "rt") -> IO[str]:
    """A trace file, gzipped when its name ends in `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode[0], encoding="utf-8")


def read_trace(path: Path) -> list[dict[str, Any]]:
    """All rows of a trace (plain or gzipped JSONL); a torn last line from a killed run is skipped."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open_text(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def chat_request(example: Example, model: str) -> dict[str, Any]:
    """The request the SDK sends for one example: zero-shot, greedy, logprobs on, task and labels given."""
    extension: dict[str, Any] = {"task": example.task}
    if example.labels is not None:
        extension["labels"] = list(example.labels)
    if example.dataset in NAMED_WORKLOADS:
        extension["workload"] = example.dataset
    return {"model": model, "messages": [{"role": "user", "content": example.prompt}],
            "max_tokens": example.max_tokens, "temperature": 0, "logprobs": True, "top_logprobs": 5,
            "extra_body": {"recserve": extension}}


def header_float(value: str | None) -> float | None:
    """A decision header's number; None for `none`, absent or malformed."""
    try:
        return float(value) if value not in (None, "", "none") else None
    except ValueError:
        return None


def label_scorer(example: Example, answer: str) -> dict[str, Any]:
    """Correctness by `is_correct` (label match, or GSM8K's final number)."""
    return {"correct": is_correct(example, answer)}


def ask_tier(client: openai.OpenAI, example: Example, tier: str, score: Scorer = label_scorer) -> dict[str, Any]:
    """One call to `recserve/<tier>`; the row the trace keeps for it (an `error` field if it failed)."""
    row: dict[str, Any] = {"dataset": example.dataset, "index": example.index, "tier": tier,
                           "task": example.task, "labels": example.labels, "gold": example.gold,
                           "max_tokens": example.max_tokens,
                           "prompt": example.prompt, "prompt_bytes": len(example.prompt.encode("utf-8"))}
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(**chat_request(example, f"recserve/{tier}"))
        completion = raw.parse()
    except openai.APIError as exc:
        row.update(error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - started)
        return row
    row["latency_s"] = time.perf_counter() - started
    body = completion.model_dump(mode="json", exclude_none=True)
    choices = body.get("choices") or []
    answer = (choices[0].get("message") or {}).get("content") or "" if choices else ""
    confidence = response_confidence(example.task, choices, example.labels)
    header = header_float(raw.headers.get("x-recserve-confidence"))
    usage = body.get("usage") or {}
    row.update(
        answer=answer, **score(example, answer), confidence=confidence,
        header_confidence=header, confidence_agrees=_agree(confidence, header),
        prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
        finish_reason=choices[0].get("finish_reason") if choices else None,
        logprobs=choices[0].get("logprobs") if choices else None,
    )
    return row


def _agree(ours: float | None, header: float | None) -> bool:
    if ours is None or header is None:
        return ours is None and header is None
    return math.isclose(ours, header, rel_tol=_AGREE_TOLERANCE, abs_tol=_AGREE_TOLERANCE)


def done_examples(rows: Sequence[dict[str, Any]], tiers: Sequence[str] = TIERS) -> set[int]:
    """Indices of examples that already have a usable row for every tier (what a resumed run skips)."""
    seen: dict[int, set[str]] = {}
    for row in rows:
        if "error" not in row:
            seen.setdefault(int(row["index"]), set()).add(str(row["tier"]))
    return {index for index, have in seen.items() if have >= set(tiers)}


def progress(done: int, total: int, started: float, skipped: int) -> str:
    """`12/40 examples, 0.85/s, ETA 33 s` over the examples this call ran (not those already recorded)."""
    elapsed = max(time.monotonic() - started, 1e-9)
    rate = (done - skipped) / elapsed
    eta = (total - done) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:.0f} s" if math.isfinite(eta) else "?"
    return f"{done}/{total} examples, {rate:.2f}/s, ETA {eta_text}"


def record(examples: Sequence[Example], out: Path, client: openai.OpenAI,
           report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
           tiers: Sequence[str] = TIERS, score: Scorer = label_scorer) -> int:
    """Append a row per tier for every example not yet complete in `out`; returns examples run now.

    An example is recorded tier by tier and counted done only when every tier has a row, so a
    restart redoes a half-recorded example (the stale rows are dropped when the trace is read).
    """
    existing = read_trace(out)
    done = done_examples(existing, tiers)
    todo = [example for example in examples if example.index not in done]
    keep = [row for row in existing if int(row["index"]) in done]
    if len(keep) != len(existing):  # rewrite without half-recorded examples
        _write_rows(out, keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    skipped = len(examples) - len(todo)
    count = skipped
    with out.open("a", encoding="utf-8") as fh:
        for example in todo:
            for row in _ask_all(client, example, tiers, score):
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            count += 1
            report(f"{example.dataset}: {progress(count, len(examples), started, skipped)}")
    return len(todo)


def _ask_all(client: openai.OpenAI, example: Example, tiers: Sequence[str],
             score: Scorer) -> Iterator[dict[str, Any]]:
    for tier in tiers:
        yield ask_tier(client, example, tier, score)


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    partial.replace(path)


def write_gzipped(rows: Sequence[dict[str, Any]], target: Path) -> Path:
    """Rows as a gzipped JSONL trace, deterministic (no timestamp in the header); returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as dst:
        dst.write("".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))
    return target


def compress(path: Path, target: Path) -> None:
    """Gzip a finished trace (deterministic: no timestamp in the header) for committing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as src, target.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0) as dst:
        dst.write(src.read())
