"""`recserve eval live`: the trace's examples through a running gateway, compared with the replay.

The gateway must be fresh (empty memory windows) and run the policy compared (`--policy`: recserve,
model `recserve`; or quality, model `recserve/quality`); its settings are read from the same config file
it was started with. Traces are sent one after another in their own order and replayed as one sequence
through one policy, so windows carry over exactly as in the gateway. Besides the served tier, the path
(with its `~` bypass and `?` verify marks), the uplink tokens and the served tier's confidence are
compared: a decision can only differ if a tier answered differently this time (llama.cpp at temperature
0 is deterministic with `--no-cache-prompt`), and the confidence comparison says whether that happened.

The quality policy is compared exactly only when nothing is left to chance or to timing: probe rate 0
and `warmup_answer: top`. Then every probe is a warm-up verification, learned from the request's own
top-tier answer before the client has it; sampled probes (an unseeded RNG in the gateway) and
background probes (which may land after the next request's decision) are not simulated live.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import openai

from gateway.cascade.runtime import quality_settings
from gateway.cascade.workloads import derived_workload
from gateway.config.schema import GatewayConfig
from gateway.evaluation.datasets import Example
from gateway.evaluation.record import NAMED_WORKLOADS, TIERS, chat_request, header_float, read_trace
from gateway.evaluation.replay import Outcome, Request, cascade, requests_from_rows
from gateway.evaluation.replay_quality import SimulatedProber
from policies.base import Task
from policies.quality import ProbeWindows, QualityPolicy
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore

MODELS = {"recserve": "recserve", "quality": "recserve/quality"}  # --policy -> the model asked for


def examples_of(rows: Sequence[dict[str, Any]]) -> list[Example]:
    """The examples a trace was recorded from, rebuilt from its rows (one per index, in order)."""
    first: dict[int, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(int(row["index"]), row)
    max_tokens = {"classification": 3, "generation": 200}
    return [Example(str(r["dataset"]), i, str(r["prompt"]), r["task"],
                    tuple(r["labels"]) if r.get("labels") is not None else None, str(r["gold"]),
                    int(r.get("max_tokens") or max_tokens[r["task"]]))
            for i, r in sorted(first.items())]


def ask_live(client: openai.OpenAI, example: Example, model: str = "recserve") -> dict[str, Any]:
    """One request; the decision headers the gateway answered with."""
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(**chat_request(example, model))
        raw.parse()
    except openai.APIError as exc:  # counted as a mismatch, never a crash halfway through the run
        return {"tier": None, "path": f"error: {exc}", "confidence": None, "threshold": None,
                "uplink_tokens": -1, "latency_s": time.perf_counter() - started}
    return {"tier": raw.headers.get("x-recserve-tier"), "path": raw.headers.get("x-recserve-path"),
            "confidence": header_float(raw.headers.get("x-recserve-confidence")),
            "threshold": header_float(raw.headers.get("x-recserve-threshold")),
            "uplink_tokens": int(raw.headers.get("x-recserve-uplink-tokens") or 0),
            "latency_s": time.perf_counter() - started}


def _uplink(request: Request, outcome: Outcome) -> int:
    return sum(request.answers[t].prompt_tokens for t in outcome.visited if t != TIERS[0])


def compare(requests: Sequence[Request], examples: Sequence[Example], outcomes: Sequence[Outcome],
            live: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-request comparison of the live gateway with the replay, and the match counts."""
    rows = []
    for request, example, outcome, seen in zip(requests, examples, outcomes, live, strict=True):
        recorded = request.answers[seen["tier"]].confidence if seen["tier"] in request.answers else None
        # A failed live request (no tier) has nothing to compare: not "the same".
        both_none = recorded is None and seen["confidence"] is None
        same_conf = seen["tier"] is not None and (both_none or (
            recorded is not None and seen["confidence"] is not None
            and math.isclose(recorded, seen["confidence"], rel_tol=1e-9, abs_tol=1e-9)))
        rows.append({"dataset": example.dataset, "index": example.index,
                     "replay_tier": outcome.served, "live_tier": seen["tier"],
                     "replay_path": outcome.path(), "live_path": seen["path"],
                     "replay_uplink_tokens": _uplink(request, outcome), "live_uplink_tokens": seen["uplink_tokens"],
                     "recorded_confidence": recorded, "live_confidence": seen["confidence"],
                     "confidence_same": same_conf, "live_latency_s": seen["latency_s"]})
    return {
        "requests_total": len(rows),
        "served_tier_matches": sum(r["replay_tier"] == r["live_tier"] for r in rows),
        "path_matches": sum(r["replay_path"] == r["live_path"] for r in rows),
        "uplink_token_matches": sum(r["replay_uplink_tokens"] == r["live_uplink_tokens"] for r in rows),
        "served_confidence_matches": sum(r["confidence_same"] for r in rows),
        "requests": rows,
    }


async def _replay(requests: Sequence[Request], config: GatewayConfig, policy: str) -> list[Outcome]:
    """The replay of the policy the gateway ran, built from the gateway's config as the gateway builds it."""
    if policy == "recserve":
        return await cascade(requests, RecServePolicy(MemoryWindowStore(), config.beta_for,
                                                      config.policy.recserve.window))
    quality = config.policy.quality
    rule = RecServePolicy(MemoryWindowStore(), config.beta_for, config.policy.recserve.window, namespace="quality")
    floor = QualityPolicy(rule, ProbeWindows(quality.window), quality_settings(quality))
    return await cascade(requests, floor, prober=SimulatedProber(floor, quality.probe_rate, quality.similarity, 0))


def as_the_gateway_keys(requests: Sequence[Request], config: GatewayConfig) -> list[Request]:
    """The requests in the workloads the gateway puts them in (it derives one when a request names
    none: its label set, else its task), so the replay keys its windows as the gateway does."""
    if config.policy.key == "task":
        return list(requests)
    return [replace(r, workload=r.workload or (r.dataset if r.dataset in NAMED_WORKLOADS else
                                               derived_workload(cast(Task, r.task), r.labels)))
            for r in requests]


def run_live(traces: Sequence[Path], client: openai.OpenAI, *, config: GatewayConfig, policy: str = "recserve",
             report: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Send every trace's examples through the gateway in order, replay them, compare."""
    if config.windows.store != "memory":
        report("warning: the live comparison assumes windows.store memory (a fresh gateway starts empty)")
    quality = config.policy.quality
    if policy == "quality" and (quality.probe_rate > 0 or quality.warmup_answer != "top"):
        report("warning: the quality policy is compared exactly only with policy.quality.probe_rate 0 and "
               "warmup_answer top (sampled and background probes are left to chance and timing)")
    requests: list[Request] = []
    examples: list[Example] = []
    for trace in traces:
        rows = read_trace(trace)
        trace_requests = requests_from_rows(rows)
        kept = {r.index for r in trace_requests}
        requests += trace_requests
        examples += [e for e in examples_of(rows) if e.index in kept]
    started = time.monotonic()
    live: list[dict[str, Any]] = []
    for count, example in enumerate(examples, start=1):
        live.append(ask_live(client, example, MODELS[policy]))
        if count % 10 == 0 or count == len(examples):
            rate = count / max(time.monotonic() - started, 1e-9)
            report(f"live: {count}/{len(examples)} requests, {rate:.2f}/s, "
                   f"ETA {(len(examples) - count) / rate:.0f} s")
    outcomes = asyncio.run(_replay(as_the_gateway_keys(requests, config), config, policy))
    summary = compare(requests, examples, outcomes, live)
    summary.update(traces=[str(t) for t in traces], policy=policy, beta=config.policy.recserve.beta,
                   window=config.policy.recserve.window, seconds=time.monotonic() - started)
    if policy == "quality":
        summary["quality"] = quality.model_dump()
    return summary
