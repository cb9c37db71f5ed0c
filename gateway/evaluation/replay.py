"""`recserve eval replay`: the policies simulated on a recorded trace, deciding exactly as the gateway.

The cascade below is the gateway's loop (gateway/cascade/climb.py) without HTTP: the recorded confidence of
each tier goes to the very policy classes the gateway runs (`RecServePolicy` with a fresh
`MemoryWindowStore`, `CasServePolicy`), in request order. A tier without a usable confidence (or whose
call failed) escalates without touching its window, as in the gateway. An answer the quality policy
would keep while still learning its tier can be *verified* instead (`Decision.verify`): the request goes
straight to the top tier, skipping the tiers in between, and the top tier's answer is served (the
verified tier's own if the top tier failed), as in the gateway.

Communication is counted as the gateway counts `x-recserve-uplink-tokens`: every call to a tier above
the first ships the prompt up once, measured by that tier's own `usage.prompt_tokens` (bytes: the
prompt's UTF-8 length). Cloud-only therefore ships every prompt to the cloud once; "comm vs cloud" is
a policy's uplink tokens over cloud-only's on the same examples.

This module is the simulation's core (requests, the loop, the baselines, the metrics); the quality
policy's probes are in `replay_quality`, the sweeps over trace files and the mixed stream in `sweeps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

from gateway.evaluation.datasets import check_answer
from gateway.evaluation.record import TIERS
from policies.base import Scope, Task, ThresholdPolicy
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
    text: str | None = None  # the answer as recorded (None in hand-made traces: agreement from `correct`)
    completion_tokens: int = 0  # the tier's usage.completion_tokens as recorded (for spend)
    message: Mapping[str, Any] | None = None  # a structured answer (tool calls) as recorded, for agreement


@dataclass(frozen=True, slots=True)
class Request:
    """One example with every tier's recorded answer, in request order."""

    index: int
    task: str
    answers: Mapping[str, TierAnswer]
    labels: tuple[str, ...] | None = None
    dataset: str = ""
    workload: str = ""  # "" keys windows by task alone (the paper); see `by_workload`

    @property
    def scope(self) -> Scope:
        return Scope(cast(Task, self.task), self.workload)


def by_workload(requests: Sequence[Request]) -> list[Request]:
    """The same requests, each in the workload of its dataset (as clients naming their workloads)."""
    return [replace(request, workload=request.dataset) for request in requests]


@dataclass(slots=True)
class Outcome:
    """Where one request was served, which tiers it visited (called) and which it bypassed, which tier's
    kept answer went to the top tier to be verified (a warm-up with `warmup_answer` "top"), and which
    tiers its probes called afterwards."""

    served: str
    visited: list[str]
    bypassed: list[str] = field(default_factory=list)
    kept: bool = False  # the served tier's policy kept the answer (not the last tier, not degraded)
    probes: list[str] = field(default_factory=list)
    verified: str | None = None  # the tier whose kept answer the top tier verified (and answered)

    def path(self, tiers: Sequence[str] = TIERS) -> str:
        """As `x-recserve-path` renders it for answered hops: `device~>edge` when the device was bypassed,
        `device?>cloud` when the cloud verified the device's kept answer."""
        return ">".join(t + ("~" if t in self.bypassed else "?" if t == self.verified else "") for t in tiers
                        if t in self.visited or t in self.bypassed)


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
    labels: dict[int, tuple[str, ...] | None] = {}
    datasets: dict[int, str] = {}
    for row in rows:
        index = int(row["index"])
        tasks[index] = str(row["task"])
        labels[index] = tuple(row["labels"]) if row.get("labels") is not None else None
        datasets[index] = str(row.get("dataset", ""))
        failed = "error" in row
        grouped.setdefault(index, {})[str(row["tier"])] = TierAnswer(
            confidence=None if failed else row.get("confidence"),
            # Re-scored with today's checker, so a fix to answer checking needs no re-recording; an answer
            # scored by running tests (a `tests` field: HumanEval) keeps its recorded verdict.
            correct=bool(row.get("correct", False)) if "answer" not in row or "tests" in row else check_answer(
                str(row["answer"]), row.get("labels"), str(row["gold"])),
            prompt_tokens=int(row.get("prompt_tokens") or 0),
            prompt_bytes=int(row["prompt_bytes"]),
            latency_s=float(row.get("latency_s") or 0.0),
            failed=failed,
            text=None if failed or "answer" not in row else str(row["answer"]),
            completion_tokens=int(row.get("completion_tokens") or 0),
        )
    return [Request(i, tasks[i], grouped[i], labels[i], datasets[i]) for i in sorted(grouped)
            if set(tiers) <= set(grouped[i])
            and not (complete_only and any(answer.failed for answer in grouped[i].values()))]


class RequestProbes(Protocol):
    """What `cascade` calls after each request: a prober simulating that request's probes."""

    def after(self, request: Request, outcome: Outcome) -> None: ...


async def cascade(requests: Sequence[Request], policy: ThresholdPolicy,
                  tiers: Sequence[str] = TIERS, prober: RequestProbes | None = None) -> list[Outcome]:
    """Run the gateway's loop over recorded answers, one request after another; with a `prober`, its
    probes of each request are simulated before the next request."""
    outcomes: list[Outcome] = []
    for request in requests:
        outcome = await _one(request, policy, tiers)
        if prober is not None:
            prober.after(request, outcome)
        outcomes.append(outcome)
    return outcomes


async def _one(request: Request, policy: ThresholdPolicy, tiers: Sequence[str]) -> Outcome:
    visited: list[str] = []
    bypassed: list[str] = []
    best: str | None = None  # the gateway's degraded answer when the last tier fails
    verified: str | None = None  # a kept answer awaiting the top tier's: the tiers in between are not asked
    for position, tier in enumerate(tiers):
        final = position == len(tiers) - 1
        if verified is not None and not final:
            continue
        if not final and policy.bypassed(tier, request.scope):
            bypassed.append(tier)
            continue
        visited.append(tier)
        answer = request.answers[tier]
        if answer.failed:
            continue
        if final:
            return Outcome(tier, visited, bypassed, verified=verified)
        if answer.confidence is None:
            best = tier
            continue
        decision = await policy.decide(tier, request.scope, answer.confidence)
        if decision.verify:
            verified = best = tier  # served after all, should the top tier fail
            continue
        if not decision.escalate:
            return Outcome(tier, visited, bypassed, kept=True)
        best = tier
    return Outcome(best or tiers[-1], visited, bypassed, verified=verified)


def beta_for(beta: float | Mapping[str, float]) -> Callable[[str], float]:
    """β per tier: one for all, or a tier -> β mapping (as the config's `policy.recserve.beta`)."""
    return (lambda tier: float(beta[tier])) if isinstance(beta, Mapping) else (lambda tier: float(beta))


def recserve_policy(beta: float | Mapping[str, float], window: int) -> RecServePolicy:
    """RecServe as the gateway builds it, on a fresh in-memory store."""
    return RecServePolicy(MemoryWindowStore(), beta_for(beta), window)


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
    """Accuracy, share per tier, uplink tokens/bytes per tier (probes included) and vs cloud-only, mean
    latency (the path's calls one after another; probes run in the background and add none)."""
    n = len(requests)
    to_tier = {tier: 0 for tier in tiers[1:]}
    bytes_to = {tier: 0 for tier in tiers[1:]}
    probe_tokens = probe_calls = bypassed = verified = 0
    correct = 0
    latency = 0.0
    served = {tier: 0 for tier in tiers}
    by_dataset: dict[str, list[int]] = {}  # right, count, kept below the top tier
    # For spend and weighted communication (gateway/evaluation/report_savings.py): every tier called.
    tokens_in = {tier: 0 for tier in tiers}
    tokens_out = {tier: 0 for tier in tiers}
    served_out = 0
    for request, outcome in zip(requests, outcomes, strict=True):
        served[outcome.served] += 1
        right = request.answers[outcome.served].correct
        correct += right
        tally = by_dataset.setdefault(request.dataset, [0, 0, 0])
        tally[0] += right
        tally[1] += 1
        tally[2] += outcome.served != tiers[-1]
        bypassed += bool(outcome.bypassed)
        verified += outcome.verified is not None
        for tier in outcome.visited:
            latency += request.answers[tier].latency_s
        served_out += request.answers[outcome.served].completion_tokens
        for tier in [*outcome.visited, *outcome.probes]:
            answer = request.answers[tier]
            tokens_in[tier] += answer.prompt_tokens
            tokens_out[tier] += answer.completion_tokens
            if tier != tiers[0]:
                to_tier[tier] += answer.prompt_tokens
                bytes_to[tier] += answer.prompt_bytes
        probe_calls += len(outcome.probes)
        probe_tokens += sum(request.answers[t].prompt_tokens for t in outcome.probes if t != tiers[0])
    cloud_tokens = sum(r.answers[tiers[-1]].prompt_tokens for r in requests)
    cloud_bytes = sum(r.answers[tiers[-1]].prompt_bytes for r in requests)
    uplink = sum(to_tier.values())
    uplink_bytes = sum(bytes_to.values())
    summary = {
        "policy": policy, "params": dict(params), "n": n,
        "accuracy": correct / n if n else 0.0,
        "share": {tier: served[tier] / n if n else 0.0 for tier in tiers},
        "uplink_tokens": uplink, "uplink_bytes": uplink_bytes,
        "tokens_to": to_tier, "bytes_to": bytes_to,
        "comm_vs_cloud": uplink / cloud_tokens if cloud_tokens else 0.0,
        # What the top tier saw, against sending it everything: its requests and prompt tokens.
        "top_requests_vs_cloud": served[tiers[-1]] / n if n else 0.0,
        "top_tokens_vs_cloud": to_tier[tiers[-1]] / cloud_tokens if cloud_tokens else 0.0,
        "bytes_vs_cloud": uplink_bytes / cloud_bytes if cloud_bytes else 0.0,
        "mean_latency_s": latency / n if n else 0.0,
        "savings_tokens": {"in": tokens_in, "out": tokens_out, "served_out": served_out, "top_prompt": cloud_tokens},
    }
    if probe_calls or bypassed:
        summary.update(probe_calls=probe_calls, probe_tokens=probe_tokens, bypassed_requests=bypassed)
    if verified:
        summary["verified_requests"] = verified
    if len(by_dataset) > 1:
        summary["accuracy_by_dataset"] = {name: right / count for name, (right, count, _) in sorted(by_dataset.items())}
        summary["kept_below_top_by_dataset"] = {name: kept / count
                                                for name, (_, count, kept) in sorted(by_dataset.items())}
    return summary
