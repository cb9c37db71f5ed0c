"""`recserve eval bfcl record`: BFCL items through every tier, via the gateway's tier-pinned models.

One JSON line per (item, tier) in `bfcl.<tier>.jsonl.gz`: the answer (text and tool calls), its raw
token logprobs, the confidence the gateway put in `x-recserve-confidence`, BFCL's verdict, the usage
and the latency the client saw. Each tier is recorded by its own thread (the tiers run on their own
cores), lines are appended as they come, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import openai

from gateway import jsonio
from gateway.evaluation.bfcl import Checker, Item, tools
from gateway.evaluation.record import header_float, open_text, read_trace

TIERS = ("device", "edge", "cloud")
# Enough for four pretty-printed calls (parallel_multiple); a rambling tier is cut off, not waited for.
MAX_TOKENS = 320


def trace_path(folder: Path, tier: str) -> Path:
    return folder / f"bfcl.{tier}.jsonl.gz"


def request(item: Item, model: str) -> dict[str, Any]:
    """What the SDK sends for one item: its conversation and tools, greedy, logprobs on."""
    return {"model": model, "messages": item.messages, "tools": tools(item), "max_tokens": MAX_TOKENS,
            "temperature": 0, "logprobs": True, "top_logprobs": 1,
            "extra_body": {"recserve": {"workload": f"bfcl-{item.category}"}}}


def _message(choice: Any) -> dict[str, Any]:
    calls = [{"type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
             for call in choice.message.tool_calls or []]
    return {"content": choice.message.content, "tool_calls": calls}


def _tokens(choice: Any) -> list[list[Any]]:
    content = choice.logprobs.content if choice.logprobs is not None else None
    return [[entry.token, entry.logprob] for entry in content or []]


def ask(client: openai.OpenAI, item: Item, tier: str, checker: Checker) -> dict[str, Any]:
    """One item at one tier, as a trace row (an error is a row too: the tier gave no answer)."""
    row: dict[str, Any] = {"id": item.id, "category": item.category, "tier": tier}
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(**request(item, f"recserve/{tier}"))
        answer = raw.parse()
    except openai.APIError as exc:
        row.update(error=f"{type(exc).__name__}: {str(exc)[:300]}", correct=False,
                   latency_s=round(time.perf_counter() - started, 3))
        return row
    choice = answer.choices[0]
    message = _message(choice)
    row.update(message=message, finish_reason=choice.finish_reason, tokens=_tokens(choice),
               header_confidence=header_float(raw.headers.get("x-recserve-confidence")),
               prompt_tokens=answer.usage.prompt_tokens if answer.usage else None,
               completion_tokens=answer.usage.completion_tokens if answer.usage else None,
               latency_s=round(time.perf_counter() - started, 3), correct=checker.correct(item, message))
    return row


def _record_tier(client: openai.OpenAI, items: Sequence[Item], tier: str, path: Path, checker: Checker,
                 say: Callable[[str], None]) -> None:
    done = {row["id"] for row in read_trace(path) if "error" not in row}
    todo = [item for item in items if item.id not in done]
    say(f"{tier}: {len(done)} recorded, {len(todo)} to go")
    right = 0
    for count, item in enumerate(todo, 1):
        row = ask(client, item, tier, checker)
        right += bool(row["correct"])
        with open_text(path, "at") as fh:
            fh.write(jsonio.dumps(row).decode() + "\n")
        if count % 20 == 0 or count == len(todo):
            say(f"{tier}: {count}/{len(todo)} ({right} right), last {row['latency_s']} s")


def record(gateway: str, items: Sequence[Item], folder: Path, checker: Checker,
           tiers: Sequence[str] = TIERS, say: Callable[[str], None] = print,
           client_factory: Callable[[str], openai.OpenAI] | None = None) -> None:
    """Record every item at every tier, one thread per tier."""
    folder.mkdir(parents=True, exist_ok=True)

    def client() -> openai.OpenAI:
        if client_factory is not None:
            return client_factory(gateway)
        return openai.OpenAI(base_url=gateway, api_key="recserve-eval", timeout=600, max_retries=0)

    threads = [threading.Thread(target=_record_tier, name=f"record-{tier}",
                                args=(client(), items, tier, trace_path(folder, tier), checker, say))
               for tier in tiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def rows_by_item(folder: Path, tiers: Sequence[str] = TIERS) -> dict[str, dict[str, Mapping[str, Any]]]:
    """The recorded rows as {item id: {tier: row}}, the last row of an (item, tier) winning."""
    table: dict[str, dict[str, Mapping[str, Any]]] = {}
    for tier in tiers:
        for row in read_trace(trace_path(folder, tier)):
            table.setdefault(row["id"], {})[tier] = row
    return table
