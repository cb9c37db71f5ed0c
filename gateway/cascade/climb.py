"""The request's journey up the tiers: call a tier, estimate its confidence, let the policy decide,
then return the answer or offload it one tier up. Returns the answer plus a trace of every hop."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from gateway.config.schema import TierConfig
from gateway.protocol import Route
from gateway.telemetry.tokens import PromptTokens
from gateway.upstream.backends import Backend, FaultKind, TierFault, TierRejected, TierReply
from gateway.upstream.vetting import upstream_path, upstream_uplink_tokens
from policies.base import DecisionReason, Scope, Task, ThresholdPolicy
from policies.confidence import response_confidence
from policies.structure import Expectation, InvalidReason, problem

Outcome = Literal["accepted", "escalated", "invalid", "fault", "busy", "skipped", "served", "failed", "bypassed",
                  "verify"]
# Why a hop was not a plain keep or escalation: no usable confidence; the tier's gate stayed shut past
# queue_timeout_s; too little time left to start it (budget); a tier fault; the tier refused the request
# (rejected); the policy's own reason (quality: the floor escalated or bypassed; warmup: verified); or
# an answer whose structure is not what the request asked (policies.structure: a broken tool call, JSON).
HopReason = FaultKind | DecisionReason | InvalidReason | Literal["no_confidence", "busy", "budget", "rejected"]
# A tier's usage count beyond this is a lie (or an overflow waiting to happen): we count ourselves.
MAX_REPORTED_TOKENS = 1 << 40
# Outcomes after which the tier gave no usable answer: the path marks the hop with "!".
_NO_ANSWER = frozenset({"fault", "busy", "skipped", "failed"})


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier as the cascade uses it: its config, its backend and its concurrency gate."""

    config: TierConfig
    backend: Backend
    gate: asyncio.Semaphore
    level: int  # position among the configured tiers; 0 is the lowest (the device)


@dataclass(slots=True)
class Hop:
    """What happened at one tier."""

    tier: str
    outcome: Outcome
    confidence: float | None = None
    threshold: float | None = None
    reason: HopReason | None = None
    upstream_path: str | None = None  # a chained RecServe gateway's own path
    answer: Mapping[str, Any] | None = None  # a "verify" hop's whole answer, compared with the top tier's
    completion_tokens: int | None = None  # an answer not served: its tier's reported usage (for spend)


@dataclass(frozen=True, slots=True)
class CascadeRequest:
    """Everything the cascade needs about one request, already validated."""

    route: Route
    body: dict[str, Any]  # what tiers receive: extension stripped, logprobs on
    # Task and workload; early-commit streaming judges a k-token prefix, whose confidences get windows
    # of their own (scope.prefix_tokens).
    scope: Scope
    labels: Sequence[str] | None
    deadline: float  # time.monotonic() by which the whole cascade must be done
    forward_headers: Mapping[str, str]
    prompt_tokens: PromptTokens  # our count, for tiers that report no usage
    # The request's workload, for what it is booked under (savings), whether or not its windows are
    # kept per workload (`scope.workload` is empty under `policy.key: task`).
    workload: str = ""
    # The tenant that sent it (its savings are booked to it); its windows' tenant is `scope.tenant`,
    # "" for a shared workload.
    tenant: str = ""
    # What the answer's structure must be (tools, tool_choice, response_format); None: no structure
    # asked, nothing checked.
    expectation: Expectation | None = None
    # Who sees each tier attempt (traces, gateway.telemetry.otel); None: nobody, nothing is done.
    watch: AttemptWatch | None = None

    @property
    def task(self) -> Task:
        return self.scope.task

    def confidence(self, answer: Mapping[str, Any]) -> float | None:
        """A tier answer's confidence for this request: over the tokens that carry the decision when a
        structure was asked (policies.confidence), else by the task's estimator."""
        return response_confidence(self.task, answer.get("choices"), self.labels,
                                   structured=self.expectation is not None)


class Attempt(Protocol):
    """One tier call as a watch sees it: the headers to send (the request's, plus e.g. a trace context),
    and its end, with the hop it became (None for a probe that answered) and the tier's reply, if any."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def end(self, hop: Hop | None, reply: TierReply | None) -> None: ...


class AttemptWatch(Protocol):
    """Told of every tier the cascade (or a probe) asks, before it is asked."""

    def attempt(self, tier: Tier, request: CascadeRequest, *, probe: bool = False) -> Attempt: ...


# How one tier is asked: (tier, request, timeout_s, is_final) -> its reply. A plain call by default;
# streaming supplies calls that buffer a stream or read just its first tokens.
TierCall = Callable[[Tier, CascadeRequest, float, bool], Awaitable[TierReply]]


async def send_call(tier: Tier, request: CascadeRequest, timeout_s: float, final: bool) -> TierReply:
    return await tier.backend.send(request.route, request.body, timeout_s=timeout_s,
                                   headers=request.forward_headers)


@dataclass(slots=True)
class CascadeResult:
    reply: TierReply
    tier: TierConfig
    hops: list[Hop]
    confidence: float | None
    threshold: float | None
    uplink_tokens: int
    degraded: bool = False
    window_fallback: bool = False
    # The served answer's structure is not what was asked (the top tier's answer is served as is);
    # None when valid, not asked, or not yet known (a stream served live is judged at its end).
    served_invalid: InvalidReason | None = None

    @property
    def path(self) -> str:
        return render_path(self.hops)


def render_path(hops: Sequence[Hop]) -> str:
    """`device>edge`; a tier that gave no answer is marked `device!>edge`, an answer whose structure
    was invalid `device(invalid_tool_call)>edge`, a chained path nested."""
    parts: list[str] = []
    for i, hop in enumerate(hops):
        text = hop.tier + (f"[{hop.upstream_path}]" if hop.upstream_path else "")
        if hop.outcome == "invalid":
            text += f"({hop.reason})"
        elif hop.outcome in _NO_ANSWER:
            text += "!"
        elif hop.outcome == "bypassed":
            text += "~"  # not asked: the policy learned it cannot answer this task well enough
        elif hop.outcome == "verify":
            text += "?"  # would have kept its answer, but the top tier checked it and answered instead
        parts.append(text)
        if i < len(hops) - 1:
            parts.append(">")
    return "".join(parts)


class CascadeFailed(Exception):
    """No tier could answer. `timed_out` tells a deadline from a fault; hops show what was tried."""

    def __init__(self, message: str, hops: list[Hop], timed_out: bool) -> None:
        super().__init__(message)
        self.hops = hops
        self.timed_out = timed_out


@dataclass(slots=True)
class _Journey:
    """Mutable bookkeeping of one cascade run."""

    hops: list[Hop] = field(default_factory=list)
    replies: list[TierReply] = field(default_factory=list)
    best: tuple[TierReply, Tier, float | None, float | None] | None = None
    uplink_tokens: int = 0
    window_fallback: bool = False
    last_fault: str = ""
    timed_out: bool = False
    watch: AttemptWatch | None = None
    attempt: Attempt | None = None  # the tier being asked now, when watched

    def record(self, hop: Hop, reply: TierReply | None = None) -> None:
        """What happened at a tier; a watched attempt there ends with it."""
        self.hops.append(hop)
        if self.attempt is not None:
            self.attempt.end(hop, reply)
            self.attempt = None


async def run_cascade(request: CascadeRequest, tiers: Sequence[Tier], policy: ThresholdPolicy,
                      call: TierCall = send_call) -> CascadeResult:
    """Ask each tier in turn, lowest first, and return the first answer the policy keeps.

    The last tier never escalates. A fault at a lower tier escalates; a fault at the last tier
    returns the best lower answer (degraded), else raises CascadeFailed. TierRejected (the request's
    own fault, or an upstream loop) propagates at once: no other tier would answer it differently.
    Every reply that is not returned is released (an open stream is closed).
    """
    journey = _Journey(watch=request.watch)
    try:
        result = await _climb(request, tiers, policy, call, journey)
    except BaseException:
        if journey.attempt is not None:  # cancelled mid-call (the client left)
            journey.attempt.end(None, None)
        await _release_all(journey.replies, keep=None)
        raise
    await _release_all(journey.replies, keep=result.reply)
    return result


async def _release_all(replies: list[TierReply], keep: TierReply | None) -> None:
    for reply in replies:
        if reply is not keep:
            await reply.release()


async def _climb(request: CascadeRequest, tiers: Sequence[Tier], policy: ThresholdPolicy, call: TierCall,
                 journey: _Journey) -> CascadeResult:
    verifying = False  # a lower tier's answer awaits the top tier's: the tiers in between are not asked
    for index, tier in enumerate(tiers):
        final = index == len(tiers) - 1
        name = tier.config.name
        if verifying and not final:
            continue
        if not final and policy.bypassed(name, request.scope):
            journey.record(Hop(name, "bypassed", reason="quality"))
            continue
        remaining = request.deadline - time.monotonic()
        if remaining <= 0 or remaining < tier.config.min_budget_s:
            journey.record(Hop(name, "skipped", reason="budget"))
            journey.timed_out = True
            continue
        reply = await _call(request, tier, final, remaining, journey, call)
        if reply is None:
            continue
        journey.replies.append(reply)
        upstream = upstream_path(reply.headers, tier.config.recserve_gateway)
        invalid = _invalid(request, reply)
        if invalid is not None and not final:
            # Before the confidence: a broken answer never enters the tier's window and is never the
            # fallback should the tiers above fail.
            journey.record(Hop(name, "invalid", reason=invalid, upstream_path=upstream,
                               completion_tokens=reported_tokens(reply.body, "completion_tokens")), reply)
            continue
        confidence = request.confidence(reply.body)
        if final:
            journey.record(Hop(name, "served", confidence, upstream_path=upstream), reply)
            return _result(reply, tier, journey, confidence, None, served_invalid=invalid)
        if confidence is None:
            journey.record(Hop(name, "escalated", reason="no_confidence", upstream_path=upstream,
                               completion_tokens=reported_tokens(reply.body, "completion_tokens")), reply)
            if reply.complete:
                journey.best = (reply, tier, None, None)
            continue
        decision = await policy.decide(name, request.scope, confidence)
        journey.window_fallback |= decision.fallback
        if decision.verify:
            journey.record(Hop(name, "verify", confidence, decision.threshold, decision.reason,
                               upstream_path=upstream, answer=reply.body if reply.complete else None,
                               completion_tokens=reported_tokens(reply.body, "completion_tokens")), reply)
            if reply.complete:  # served after all, should the top tier fail
                journey.best = (reply, tier, confidence, decision.threshold)
            else:
                await reply.release()
            verifying = True
            continue
        if decision.escalate:
            journey.record(Hop(name, "escalated", confidence, decision.threshold, decision.reason,
                               upstream_path=upstream,
                               completion_tokens=reported_tokens(reply.body, "completion_tokens")), reply)
            if reply.complete:  # a cut-off prefix is no answer to fall back on
                journey.best = (reply, tier, confidence, decision.threshold)
            else:
                await reply.release()  # early commit: cancel the escalated tier's stream now
            continue
        journey.record(Hop(name, "accepted", confidence, decision.threshold, upstream_path=upstream), reply)
        return _result(reply, tier, journey, confidence, decision.threshold)
    if journey.best is not None:
        reply, tier, confidence, threshold = journey.best
        return _result(reply, tier, journey, confidence, threshold, degraded=True)
    raise CascadeFailed(journey.last_fault or "no tier could answer in time", journey.hops, journey.timed_out)


async def _call(request: CascadeRequest, tier: Tier, final: bool, remaining: float,
                journey: _Journey, call: TierCall) -> TierReply | None:
    """One tier call under its concurrency gate; None (with the hop recorded) when it gave no answer."""
    name = tier.config.name
    if journey.watch is not None:  # from here on (the wait for the gate included), the attempt is watched
        journey.attempt = journey.watch.attempt(tier, request)
        request = replace(request, forward_headers=journey.attempt.headers)
    # A lower tier that is saturated is the congestion case: offload rather than queue. The last
    # tier has nowhere to send the request, so it queues until the deadline.
    wait = remaining if final else min(tier.config.queue_timeout_s, remaining)
    try:
        if tier.gate.locked():
            async with asyncio.timeout(wait):
                await tier.gate.acquire()
        else:
            await tier.gate.acquire()  # a free gate is taken at once: no timer to arm and cancel per request
    except TimeoutError:
        outcome: Outcome = "failed" if final else "busy"
        journey.record(Hop(name, outcome, reason="busy"))
        journey.last_fault = f"tier '{name}' was busy"
        journey.timed_out = final
        return None
    try:
        remaining = request.deadline - time.monotonic()
        timeout_s = min(tier.config.timeout_s, remaining)
        reply = await call(tier, request, max(timeout_s, 0.001), final)
    except TierFault as fault:
        if tier.level > 0:
            journey.uplink_tokens += await request.prompt_tokens.count()
        journey.record(Hop(name, "failed" if final else "fault", reason=fault.kind))
        journey.last_fault = f"tier '{name}' failed: {fault.message}"
        journey.timed_out = fault.kind == "timeout" and timeout_s >= remaining
        return None
    except TierRejected as rejected:
        journey.record(Hop(name, "failed" if final else "fault", reason="rejected"))
        rejected.path = render_path(journey.hops)  # the client's error still says where it was refused
        raise
    finally:
        tier.gate.release()
    if tier.level > 0:
        journey.uplink_tokens += await prompt_tokens_of(reply.body, request.prompt_tokens)
    journey.uplink_tokens += upstream_uplink_tokens(reply.headers, tier.config.recserve_gateway)
    return reply


def reported_tokens(body: Mapping[str, Any] | None, key: str) -> int | None:
    """A tier's own `usage[key]` (prompt_tokens, completion_tokens), when it is a plausible count."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if isinstance(usage, Mapping):
        tokens = usage.get(key)
        if isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens <= MAX_REPORTED_TOKENS:
            return tokens
    return None


async def prompt_tokens_of(body: Mapping[str, Any], counted: PromptTokens) -> int:
    """The tier's own usage.prompt_tokens, else our tiktoken count."""
    tokens = reported_tokens(body, "prompt_tokens")
    return await counted.count() if tokens is None else tokens


def _invalid(request: CascadeRequest, reply: TierReply) -> InvalidReason | None:
    """The answer's structure problem; None when valid, when none is asked, or for a stream's prefix
    (early commit reads a structured answer whole: see cascade.streaming)."""
    if request.expectation is None or not reply.complete:
        return None
    return problem(request.expectation, reply.body.get("choices"))


def _result(reply: TierReply, tier: Tier, journey: _Journey, confidence: float | None,
            threshold: float | None, degraded: bool = False,
            served_invalid: InvalidReason | None = None) -> CascadeResult:
    if confidence is not None and not math.isfinite(confidence):
        confidence = None
    return CascadeResult(reply, tier.config, journey.hops, confidence, threshold, journey.uplink_tokens,
                         degraded, journey.window_fallback, served_invalid)
