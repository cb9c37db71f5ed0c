"""`recserve eval replay`: the policies simulated on a recorded trace, deciding exactly as the gateway.

The cascade below is the gateway's loop (gateway/cascade.py) without HTTP: the recorded confidence of
each tier goes to the very policy classes the gateway runs (`RecServePolicy` with a fresh
`MemoryWindowStore`, `CasServePolicy`), in request order. A tier without a usable confidence (or whose
call failed) escalates without touching its window, as in the gateway.

Communication is counted as the gateway counts `x-recserve-uplink-tokens`: every call to a tier above
the first ships the prompt up once, measured by that tier's own `usage.prompt_tokens` (bytes: the
prompt's UTF-8 length). Cloud-only therefore ships every prompt to the cloud once; "comm vs cloud" is
a policy's uplink tokens over cloud-only's on the same examples.

The quality policy (`recserve/quality`) is the gateway's very `QualityPolicy` on a fresh memory store;
its probes are simulated as `gateway.probes.Prober` runs them, from the recorded answers: after each
request, one draw of a seeded RNG per lower tier on the path (kept, escalated or bypassed, as the
gateway draws one per hop) decides whether that tier is probed, and while the tier and task holds fewer
than `warmup_probes` probes every kept (or bypassed) one is, as in the gateway. A kept answer is compared with the
recorded top-tier answer (`agree`, the gateway's rule), a bypassed tier's recorded answer likewise. The
probes' calls count in the communication as the prompt shipped once more: one top-tier call per request
shared by all its sampled tiers (none when the top tier served it), plus each sampled bypassed tier.
A bypassed tier is not called on the request's path.
Probes finish before the next request here; in the gateway they run in the background.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config import QualityPolicyConfig
from gateway.evaluation.datasets import check_answer
from gateway.evaluation.record import TIERS, read_trace
from gateway.probes import agree
from policies.base import ThresholdPolicy
from policies.casserve import CasServePolicy
from policies.quality import ProbeWindows, QualityPolicy, QualitySettings
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore

BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
WINDOWS = (10, 100, 10000)
# Below 0.5 too: over 4-5 options a small model's max-softmax is often 0.3-0.5, so 0.5 already escalates
# nearly everything and the curve would not reach low communication.
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
TARGETS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
PROBE_RATES = (0.02, 0.05, 0.1)
WARMUPS = (0, 10, 20, 40)  # policy.quality.warmup_probes values of the sensitivity sweep
# The quality policy's window rule runs at the authors' W, as the gateway's default config does.
QUALITY_WINDOW = 10000
MAIN_BETA = 0.3


@dataclass(frozen=True, slots=True)
class QualityOptions:
    """The quality sweep: every target x every β at `probe_rate`; the other probe rates and the other
    warm-up lengths at `MAIN_BETA`. Probe settings default to the gateway's config defaults
    (`policy.quality`); `warmup_probes` None is the config's default, min_probes (at most the window)."""

    targets: tuple[float, ...] = TARGETS
    betas: tuple[float, ...] = BETAS
    probe_rate: float = QualityPolicyConfig().probe_rate
    other_probe_rates: tuple[float, ...] = tuple(r for r in PROBE_RATES if r != QualityPolicyConfig().probe_rate)
    seed: int = 0
    min_probes: int = QualityPolicyConfig().min_probes
    probe_window: int = QualityPolicyConfig().window
    similarity: float = QualityPolicyConfig().similarity
    warmup_probes: int | None = None
    other_warmups: tuple[int, ...] = ()

    @property
    def warmup(self) -> int:
        """`warmup_probes` as the config resolves it."""
        return min(self.min_probes, self.probe_window) if self.warmup_probes is None else self.warmup_probes


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


@dataclass(frozen=True, slots=True)
class Request:
    """One example with every tier's recorded answer, in request order."""

    index: int
    task: str
    answers: Mapping[str, TierAnswer]
    labels: tuple[str, ...] | None = None
    dataset: str = ""


@dataclass(slots=True)
class Outcome:
    """Where one request was served, which tiers it visited (called) and which it bypassed, and which
    tiers its probes called afterwards."""

    served: str
    visited: list[str]
    bypassed: list[str] = field(default_factory=list)
    kept: bool = False  # the served tier's policy kept the answer (not the last tier, not degraded)
    probes: list[str] = field(default_factory=list)

    def path(self, tiers: Sequence[str] = TIERS) -> str:
        """As `x-recserve-path` renders it for answered hops: `device~>edge` when the device was bypassed."""
        return ">".join(t + "~" if t in self.bypassed else t for t in tiers
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
            # Re-scored with today's checker, so a fix to answer checking needs no re-recording.
            correct=bool(row.get("correct", False)) if "answer" not in row else check_answer(
                str(row["answer"]), row.get("labels"), str(row["gold"])),
            prompt_tokens=int(row.get("prompt_tokens") or 0),
            prompt_bytes=int(row["prompt_bytes"]),
            latency_s=float(row.get("latency_s") or 0.0),
            failed=failed,
            text=None if failed or "answer" not in row else str(row["answer"]),
        )
    return [Request(i, tasks[i], grouped[i], labels[i], datasets[i]) for i in sorted(grouped)
            if set(tiers) <= set(grouped[i])
            and not (complete_only and any(answer.failed for answer in grouped[i].values()))]


async def cascade(requests: Sequence[Request], policy: ThresholdPolicy,
                  tiers: Sequence[str] = TIERS, prober: SimulatedProber | None = None) -> list[Outcome]:
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
    for position, tier in enumerate(tiers):
        final = position == len(tiers) - 1
        if not final and policy.bypassed(tier, request.task):
            bypassed.append(tier)
            continue
        visited.append(tier)
        answer = request.answers[tier]
        if answer.failed:
            continue
        if final:
            return Outcome(tier, visited, bypassed)
        if answer.confidence is None:
            best = tier
            continue
        decision = await policy.decide(tier, request.task, answer.confidence)
        if not decision.escalate:
            return Outcome(tier, visited, bypassed, kept=True)
        best = tier
    return Outcome(best or tiers[-1], visited, bypassed)


def _body(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


class SimulatedProber:
    """`gateway.probes.Prober` on recorded answers: same sampling, same agreement rule, no network."""

    def __init__(self, policy: QualityPolicy, rate: float, similarity: float, seed: int,
                 tiers: Sequence[str] = TIERS) -> None:
        self._policy = policy
        self._rate = rate
        self._similarity = similarity
        self._rng = random.Random(seed)
        self._tiers = tiers

    def after(self, request: Request, outcome: Outcome) -> None:
        """Sample this request's kept and bypassed lower tiers; record what the probes learn."""
        if request.answers[outcome.served].failed:
            return  # the gateway had no answer to return (CascadeFailed): no probes
        sampled = []
        for tier in self._tiers[:-1]:
            if tier not in outcome.visited and tier not in outcome.bypassed:
                continue
            drawn = self._rng.random() < self._rate  # one draw per hop, warming up or not, as the gateway draws
            if not (tier in outcome.bypassed or (outcome.kept and tier == outcome.served)):
                continue
            if drawn or self._policy.warming(tier, request.task):  # nothing pending: probes finish first here
                sampled.append(tier)
        if not sampled:
            return
        top = self._tiers[-1]
        if outcome.served != top:
            outcome.probes.append(top)  # one top-tier answer serves every sampled hop
        reference = request.answers[top]
        if reference.failed:
            return  # the gateway asks no bypassed tier without a top answer to compare with
        for tier in sampled:
            answer = request.answers[tier]
            if tier in outcome.bypassed:
                outcome.probes.append(tier)  # a bypassed tier is asked by its probe only
            if answer.failed:
                continue
            confidence = answer.confidence if answer.confidence is not None else 0.0
            self._policy.record_probe(tier, request.task, confidence, self._agree(request, answer, reference))

    def _agree(self, request: Request, answer: TierAnswer, reference: TierAnswer) -> bool:
        if answer.text is None or reference.text is None:
            return answer.correct and reference.correct  # hand-made traces carry no answer text
        return agree(request.task, request.labels, _body(answer.text), _body(reference.text), self._similarity)


def recserve_policy(beta: float | Mapping[str, float], window: int) -> RecServePolicy:
    """RecServe as the gateway builds it, on a fresh in-memory store."""
    beta_for: Callable[[str], float] = (
        (lambda tier: float(beta[tier])) if isinstance(beta, Mapping) else (lambda tier: float(beta)))
    return RecServePolicy(MemoryWindowStore(), beta_for, window)


def quality_policy(beta: float | Mapping[str, float], window: int, target: float,
                   options: QualityOptions = QualityOptions()) -> QualityPolicy:
    """The quality policy as the gateway builds it (its rule keeps windows of its own), memory store."""
    beta_for: Callable[[str], float] = (
        (lambda tier: float(beta[tier])) if isinstance(beta, Mapping) else (lambda tier: float(beta)))
    rule = RecServePolicy(MemoryWindowStore(), beta_for, window, namespace="quality")
    settings = QualitySettings(target, options.min_probes, options.probe_window, options.warmup)
    return QualityPolicy(rule, ProbeWindows(options.probe_window), settings)


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
    probe_tokens = probe_calls = bypassed = 0
    correct = 0
    latency = 0.0
    served = {tier: 0 for tier in tiers}
    by_dataset: dict[str, list[int]] = {}
    for request, outcome in zip(requests, outcomes, strict=True):
        served[outcome.served] += 1
        right = request.answers[outcome.served].correct
        correct += right
        tally = by_dataset.setdefault(request.dataset, [0, 0])
        tally[0] += right
        tally[1] += 1
        bypassed += bool(outcome.bypassed)
        for tier in outcome.visited:
            latency += request.answers[tier].latency_s
        for tier in [*outcome.visited, *outcome.probes]:
            answer = request.answers[tier]
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
        "bytes_vs_cloud": uplink_bytes / cloud_bytes if cloud_bytes else 0.0,
        "mean_latency_s": latency / n if n else 0.0,
    }
    if probe_calls or bypassed:
        summary.update(probe_calls=probe_calls, probe_tokens=probe_tokens, bypassed_requests=bypassed)
    if len(by_dataset) > 1:
        summary["accuracy_by_dataset"] = {name: right / count for name, (right, count) in sorted(by_dataset.items())}
    return summary


async def run_quality(requests: Sequence[Request], beta: float, target: float, probe_rate: float,
                      options: QualityOptions = QualityOptions(), warm: bool = False) -> dict[str, Any]:
    """One quality-policy run (fresh windows, fresh probes, RNG seeded with `options.seed`); its
    metrics, and what the policy had learned per tier and task at the end of the trace.

    `warm`: the trace is first replayed, unmeasured and repeated as needed, for 2 * min_probes /
    probe_rate requests (a tier keeping half the traffic then holds about min_probes probes), so the
    measured pass starts learned: a steady-state view, and an optimistic one, since the competence is
    then judged on the very examples it was probed on."""
    policy = quality_policy(beta, QUALITY_WINDOW, target, options)
    prober = SimulatedProber(policy, probe_rate, options.similarity, options.seed)
    warmup = math.ceil(2 * options.min_probes / probe_rate) if warm and probe_rate > 0 and requests else 0
    for start in range(0, warmup, len(requests) or 1):
        await cascade(requests[:warmup - start], policy, prober=prober)
    outcomes = await cascade(requests, policy, prober=prober)
    params = {"target": target, "beta": beta, "window": QUALITY_WINDOW, "probe_rate": probe_rate,
              "seed": options.seed, "min_probes": options.min_probes, "probe_window": options.probe_window,
              "similarity": options.similarity, "warmup_probes": options.warmup, "warm": warm,
              "warmup_requests": warmup}
    summary = summarise(requests, outcomes, "quality", params)
    tasks = sorted({r.task for r in requests})
    summary["learned"] = {f"{tier}/{task}": policy.describe(tier, task) for tier in TIERS[:-1] for task in tasks}
    return summary


async def _sweeps(requests: Sequence[Request], options: QualityOptions) -> list[dict[str, Any]]:
    results = []
    for threshold in THRESHOLDS:
        outcomes = await cascade(requests, casserve_policy(threshold))
        results.append(summarise(requests, outcomes, "casserve", {"threshold": threshold}))
    for window in WINDOWS:
        for beta in BETAS:
            outcomes = await cascade(requests, recserve_policy(beta, window))
            results.append(summarise(requests, outcomes, "recserve", {"beta": beta, "window": window}))
    for beta in options.betas:
        for target in options.targets:
            results.append(await run_quality(requests, beta, target, options.probe_rate, options))
    for rate in options.other_probe_rates:
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, rate, options))
    for rate in (options.probe_rate, *options.other_probe_rates):
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, rate, options, warm=True))
    for warmup in options.other_warmups:
        for target in options.targets:
            results.append(await run_quality(requests, MAIN_BETA, target, options.probe_rate,
                                             replace(options, warmup_probes=warmup)))
    return results


def replay(requests: Sequence[Request], options: QualityOptions = QualityOptions()) -> list[dict[str, Any]]:
    """Every policy of the evaluation on one trace, each with fresh windows."""
    results = [summarise(requests, fixed(requests, tier), f"{tier}-only", {}) for tier in TIERS]
    results += asyncio.run(_sweeps(requests, options))
    results.append(summarise(requests, oracle(requests), "oracle", {}))
    return results


def load_trace(path: Path) -> tuple[list[dict[str, Any]], list[Request]]:
    """A trace's rows and its complete requests (those where no tier call failed)."""
    rows = read_trace(path)
    return rows, requests_from_rows(rows, complete_only=True)


def replay_trace_file(path: Path, options: QualityOptions = QualityOptions()) -> dict[str, Any]:
    """Replay one trace file; the dataset name, request count and every policy's metrics."""
    rows, requests = load_trace(path)
    failed = sorted({int(row["index"]) for row in rows if "error" in row})
    dataset = str(rows[0]["dataset"]) if rows else path.stem
    agrees = [row.get("confidence_agrees") for row in rows if "error" not in row]
    return {"dataset": dataset, "trace": str(path), "n": len(requests), "excluded_failed_calls": failed,
            "task": requests[0].task if requests else None,
            "confidence_header_agrees": sum(1 for a in agrees if a), "confidence_rows": len(agrees),
            "quality_warmup": options.warmup, "policies": replay(requests, options)}


def interleave(streams: Sequence[Sequence[Request]]) -> list[Request]:
    """One mixed stream: the first request of each stream in turn, then the second, ... (round robin in
    the given order; a stream that runs out is skipped)."""
    mixed: list[Request] = []
    for position in range(max((len(s) for s in streams), default=0)):
        mixed += [stream[position] for stream in streams if position < len(stream)]
    return mixed


def replay_mixed(streams: Mapping[str, Sequence[Request]],
                 options: QualityOptions = QualityOptions()) -> dict[str, Any]:
    """Every policy on the datasets interleaved (datasets in the mapping's order). Windows are keyed
    by task as in the gateway, so all classification datasets share one window per tier."""
    mixed = interleave(list(streams.values()))
    return {"dataset": "mixed", "trace": "round robin over " + ", ".join(streams), "n": len(mixed),
            "excluded_failed_calls": [], "task": "mixed", "datasets": {k: len(v) for k, v in streams.items()},
            "quality_warmup": options.warmup, "policies": replay(mixed, options)}
