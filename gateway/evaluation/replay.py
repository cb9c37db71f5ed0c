"""`recserve eval replay`: the policies simulated on a recorded trace, deciding exactly as the gateway.

The cascade below is the gateway's loop (gateway/cascade.py) without HTTP: the recorded confidence of
each tier goes to the very policy classes the gateway runs (`RecServePolicy` with a fresh
`MemoryWindowStore`, `CasServePolicy`), in request order. A tier without a usable confidence (or whose
call failed) escalates without touching its window, as in the gateway.

Communication is counted as the gateway counts `x-recserve-uplink-tokens`: every call to a tier above
the first ships the prompt up once, measured by that tier's own `usage.prompt_tokens` (bytes: the
prompt's UTF-8 length). Cloud-only therefore ships every prompt to the cloud once; "comm vs cloud" is
a policy's uplink tokens over cloud-only's on the same examples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.evaluation.datasets import check_answer
from gateway.evaluation.record import TIERS, read_trace
from policies.base import ThresholdPolicy
from policies.casserve import CasServePolicy
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore

BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
WINDOWS = (10, 100, 10000)
# Below 0.5 too: over 4-5 options a small model's max-softmax is often 0.3-0.5, so 0.5 already escalates
# nearly everything and the curve would not reach low communication.
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """What one tier said to one example in the trace."""

    confidence: float | None
    correct: bool
    prompt_tokens: int
    prompt_bytes: int
    latency_s: float
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """One example with every tier's recorded answer, in request order."""

    index: int
    task: str
    answers: Mapping[str, TierAnswer]


@dataclass(slots=True)
class Outcome:
    """Where one request was served and which tiers it visited."""

    served: str
    visited: list[str]


@dataclass(slots=True)
class Metrics:
    """Totals of one policy over a trace."""

    policy: str
    params: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


def requests_from_rows(rows: Sequence[Mapping[str, Any]], tiers: Sequence[str] = TIERS,
                       complete_only: bool = False) -> list[Request]:
    """Group trace rows into requests (sorted by index); examples missing a tier are left out, and with
    `complete_only` also those where a tier call failed (a timeout under load says nothing about the
    model, and would count as a wrong answer that shipped no tokens)."""
    grouped: dict[int, dict[str, TierAnswer]] = {}
    tasks: dict[int, str] = {}
    for row in rows:
        index = int(row["index"])
        tasks[index] = str(row["task"])
        failed = "error" in row
        grouped.setdefault(index, {})[str(row["tier"])] = TierAnswer(
            confidence=None if failed else row.get("confidence"),
            # Re-scored with today's checker, so a fix to answer checking needs no re-recording.
            correct=bool(row.get("correct", False)) if "answer" not in row else check_answer(
                str(row["answer"]), row.get("labels"), str(row["gold"])),
            prompt_tokens=int(row.get("prompt_tokens") or 0),
            prompt_bytes=int(row["prompt_bytes"]),
            latency_s=float(row.get("latency_s") or 0.0),
            failed=failed,
        )
    return [Request(i, tasks[i], grouped[i]) for i in sorted(grouped) if set(tiers) <= set(grouped[i])
            and not (complete_only and any(answer.failed for answer in grouped[i].values()))]


async def cascade(requests: Sequence[Request], policy: ThresholdPolicy,
                  tiers: Sequence[str] = TIERS) -> list[Outcome]:
    """Run the gateway's loop over recorded answers, one request after another."""
    outcomes: list[Outcome] = []
    for request in requests:
        outcomes.append(await _one(request, policy, tiers))
    return outcomes


async def _one(request: Request, policy: ThresholdPolicy, tiers: Sequence[str]) -> Outcome:
    visited: list[str] = []
    best: str | None = None  # the gateway's degraded answer when the last tier fails
    for position, tier in enumerate(tiers):
        visited.append(tier)
        answer = request.answers[tier]
        if answer.failed:
            continue
        if position == len(tiers) - 1:
            return Outcome(tier, visited)
        if answer.confidence is None:
            best = tier
            continue
        decision = await policy.decide(tier, request.task, answer.confidence)
        if not decision.escalate:
            return Outcome(tier, visited)
        best = tier
    return Outcome(best or tiers[-1], visited)


def recserve_policy(beta: float | Mapping[str, float], window: int) -> RecServePolicy:
    """RecServe as the gateway builds it, on a fresh in-memory store."""
    beta_for: Callable[[str], float] = (
        (lambda tier: float(beta[tier])) if isinstance(beta, Mapping) else (lambda tier: float(beta)))
    return RecServePolicy(MemoryWindowStore(), beta_for, window)


def casserve_policy(threshold: float) -> CasServePolicy:
    """CasServe with the same fixed threshold on every non-final tier."""
    return CasServePolicy(lambda tier: threshold)


def fixed(requests: Sequence[Request], tier: str) -> list[Outcome]:
    """Every request pinned to one tier."""
    return [Outcome(tier, [tier]) for _ in requests]


def oracle(requests: Sequence[Request], tiers: Sequence[str] = TIERS) -> list[Outcome]:
    """The lowest tier that answered correctly, sent there directly; the first tier if none did."""
    outcomes = []
    for request in requests:
        tier = next((t for t in tiers if request.answers[t].correct), tiers[0])
        outcomes.append(Outcome(tier, [tier]))
    return outcomes


def summarise(requests: Sequence[Request], outcomes: Sequence[Outcome], policy: str,
              params: Mapping[str, Any], tiers: Sequence[str] = TIERS) -> dict[str, Any]:
    """Accuracy, share per tier, uplink tokens/bytes per tier and vs cloud-only, mean latency."""
    n = len(requests)
    to_tier = {tier: 0 for tier in tiers[1:]}
    bytes_to = {tier: 0 for tier in tiers[1:]}
    correct = 0
    latency = 0.0
    served = {tier: 0 for tier in tiers}
    for request, outcome in zip(requests, outcomes, strict=True):
        served[outcome.served] += 1
        correct += request.answers[outcome.served].correct
        for tier in outcome.visited:
            answer = request.answers[tier]
            latency += answer.latency_s  # tiers are tried one after another
            if tier != tiers[0]:
                to_tier[tier] += answer.prompt_tokens
                bytes_to[tier] += answer.prompt_bytes
    cloud_tokens = sum(r.answers[tiers[-1]].prompt_tokens for r in requests)
    cloud_bytes = sum(r.answers[tiers[-1]].prompt_bytes for r in requests)
    uplink = sum(to_tier.values())
    uplink_bytes = sum(bytes_to.values())
    return {
        "policy": policy, "params": dict(params), "n": n,
        "accuracy": correct / n if n else 0.0,
        "share": {tier: served[tier] / n if n else 0.0 for tier in tiers},
        "uplink_tokens": uplink, "uplink_bytes": uplink_bytes,
        "tokens_to": to_tier, "bytes_to": bytes_to,
        "comm_vs_cloud": uplink / cloud_tokens if cloud_tokens else 0.0,
        "bytes_vs_cloud": uplink_bytes / cloud_bytes if cloud_bytes else 0.0,
        "mean_latency_s": latency / n if n else 0.0,
    }


async def _sweeps(requests: Sequence[Request]) -> list[dict[str, Any]]:
    results = []
    for threshold in THRESHOLDS:
        outcomes = await cascade(requests, casserve_policy(threshold))
        results.append(summarise(requests, outcomes, "casserve", {"threshold": threshold}))
    for window in WINDOWS:
        for beta in BETAS:
            outcomes = await cascade(requests, recserve_policy(beta, window))
            results.append(summarise(requests, outcomes, "recserve", {"beta": beta, "window": window}))
    return results


def replay(requests: Sequence[Request]) -> list[dict[str, Any]]:
    """Every policy of the evaluation on one trace, each with fresh windows."""
    results = [summarise(requests, fixed(requests, tier), f"{tier}-only", {}) for tier in TIERS]
    results += asyncio.run(_sweeps(requests))
    results.append(summarise(requests, oracle(requests), "oracle", {}))
    return results


def replay_trace_file(path: Path) -> dict[str, Any]:
    """Replay one trace file; the dataset name, request count and every policy's metrics."""
    rows = read_trace(path)
    requests = requests_from_rows(rows, complete_only=True)
    failed = sorted({int(row["index"]) for row in rows if "error" in row})
    dataset = str(rows[0]["dataset"]) if rows else path.stem
    agree = [row.get("confidence_agrees") for row in rows if "error" not in row]
    return {"dataset": dataset, "trace": str(path), "n": len(requests), "excluded_failed_calls": failed,
            "task": requests[0].task if requests else None,
            "confidence_header_agrees": sum(1 for a in agree if a), "confidence_rows": len(agree),
            "policies": replay(requests)}
