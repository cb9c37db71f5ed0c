"""What the request path reports about itself: one `request_done` call per cascade (success or
failure) feeds the metrics and leaves a summary for the access log; tier calls are timed by
wrapping each tier's backend, so "gateway overhead" is end-to-end time minus time inside tiers."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway import jsonio
from gateway.cascade.climb import CascadeResult, Hop, render_path, reported_tokens
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.savings import SavingsRates, completion_tokens_of, prompt_shipped
from gateway.telemetry.tokens import PromptTokenCounter
from gateway.upstream.backends import TierRejected

SUMMARY_STATE = "recserve_summary"  # request.state attribute the access log reads


@dataclass(slots=True)
class TierClock:
    """Seconds one request spent inside tier calls (summed over its hops)."""

    seconds: float = 0.0


# The key under which a request's TierClock travels from the middleware to the tier calls below
# it. A ContextVar is an immutable handle; each request's value lives in its own context.
_TIER_CLOCK: ContextVar[TierClock | None] = ContextVar("recserve_tier_clock", default=None)


def start_tier_clock() -> tuple[TierClock, Token[TierClock | None]]:
    clock = TierClock()
    return clock, _TIER_CLOCK.set(clock)


def stop_tier_clock(token: Token[TierClock | None]) -> None:
    _TIER_CLOCK.reset(token)


@dataclass(slots=True)  # not frozen: built on every request, and a frozen one pays a setattr per field
class CascadeSummary:
    """The cascade's part of an access-log line."""

    task: str
    tenant: str  # its name, never its key
    workload: str
    tier: str | None
    path: str
    confidence: float | None
    threshold: float | None
    degraded: bool
    window_fallback: bool
    uplink_tokens: int
    prompt: Any = None  # only with logging.include_prompts
    served_invalid: str | None = None  # the served answer's structure problem (policies.structure)
    usage: Mapping[str, Any] | None = None  # a stream's usage as its end reported it (a live answer's span)


def _escalation_reason(hop: Hop) -> str | None:
    if hop.outcome == "invalid":
        return hop.reason  # one of policies.structure's InvalidReason: a fixed set
    if hop.outcome == "escalated":
        return "no_confidence" if hop.reason == "no_confidence" else "low_confidence"
    if hop.outcome == "fault":
        return "fault"
    if hop.outcome == "busy":
        return "busy"
    if hop.outcome == "skipped":
        return "budget"
    if hop.outcome == "verify":
        return "warmup"  # a learning quality floor had the top tier answer instead
    return None


class RequestObserver:
    """Per-runtime view onto the app's metrics (tier levels and logging settings are the runtime's)."""

    def __init__(self, metrics: Metrics, tier_levels: Mapping[str, int], tokens: PromptTokenCounter, *,
                 include_prompts: bool, rates: SavingsRates | None = None) -> None:
        self._metrics = metrics
        self.rates = rates
        self._levels = dict(tier_levels)
        self._tokens = tokens
        self._include_prompts = include_prompts

    def request_done(self, request: Request, policy: str, task: str, body: Mapping[str, Any],
                     result: CascadeResult | None = None, hops: Sequence[Hop] | None = None,
                     usage: Mapping[str, Any] | None = None, *, workload: str | None = None,
                     tenant: str, count_prompt: Callable[[], int], served_invalid: str | None = None) -> None:
        """Record one finished cascade: pass `result`, or the failed cascade's `hops`; a stream
        passes the `usage` its last chunk reported (its result's body has none) and, judged at its
        end, the served answer's structure problem. Savings are kept per `tenant` and `workload` (default: the
        task). `count_prompt`: the request's own count (`PromptTokens`), used when no tier reported usage.

        Cheap and never raises into the request path's logic beyond programming errors.
        """
        m = self._metrics
        journey = result.hops if result is not None else list(hops or ())
        # One number per request on both sides of the "saved" ratio; the served tier's own usage
        # spares tokenizing every prompt on the hot path.
        reported = {"usage": usage} if usage is not None else result.reply.body if result is not None else {}
        reported_prompt = reported_tokens(reported, "prompt_tokens")
        prompt_count = reported_prompt if reported_prompt is not None else count_prompt()
        prompt_bytes = len(jsonio.dumps(body))
        for hop in journey:
            if hop.confidence is not None:
                m.confidence_at(hop.tier, task).observe(hop.confidence)
            if hop.threshold is not None:
                m.threshold_at(policy, hop.tier, task).set(hop.threshold)
            reason = _escalation_reason(hop)
            if reason is not None:
                m.escalations_at(hop.tier, reason).inc()
            if self._levels.get(hop.tier, 0) > 0 and prompt_shipped(hop):
                m.uplink_tokens_at(hop.tier).inc(prompt_count)
                m.uplink_bytes_at(hop.tier).inc(prompt_bytes)
                m.traffic.uplink_tokens += prompt_count
                m.traffic.uplink_bytes += prompt_bytes
        m.cloud_only_tokens.inc(prompt_count)
        m.cloud_only_bytes.inc(prompt_bytes)
        m.traffic.cloud_only_tokens += prompt_count
        m.traffic.cloud_only_bytes += prompt_bytes
        m.traffic.count_request(result.tier.name if result is not None else None)
        if result is not None:
            served_invalid = served_invalid or result.served_invalid
            if served_invalid is not None:
                m.invalid_served_at(result.tier.name, served_invalid).inc()
        if self.rates is not None:
            served = result.tier.name if result is not None else None
            completion = completion_tokens_of(reported, self._tokens.count_text) if result is not None else 0
            cost = self.rates.request(journey, served, prompt_count, completion)
            m.savings.request(tenant, workload or task, cost, served, self.rates.max_workloads)
        prompt = (body.get("messages", body.get("prompt"))) if self._include_prompts else None
        setattr(request.state, SUMMARY_STATE, CascadeSummary(
            task=task,
            tenant=tenant,
            workload=workload or task,
            tier=result.tier.name if result is not None else None,
            path=result.path if result is not None else render_path(journey),
            confidence=result.confidence if result is not None else None,
            threshold=result.threshold if result is not None else None,
            degraded=result.degraded if result is not None else False,
            window_fallback=result.window_fallback if result is not None else False,
            uplink_tokens=result.uplink_tokens if result is not None else 0,
            prompt=prompt,
            served_invalid=served_invalid if result is not None else None,
            usage=usage,
        ))

    def timed(self, tier: str, backend: Any) -> TimedBackend:
        return TimedBackend(tier, backend, self._metrics)


class TimedBackend:
    """A tier's backend with every call timed into `recserve_tier_latency_seconds` and the request's clock.

    Delegates by name so that it wraps any Backend method (send, open_stream, ...) without
    restating their signatures; `aclose` is passed through untimed.
    """

    def __init__(self, tier: str, inner: Any, metrics: Metrics) -> None:
        self._tier = tier
        self._inner = inner
        self._metrics = metrics

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        timed = self._timed(attribute)
        setattr(self, name, timed)  # wrap once: later lookups find it without coming here
        return timed

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        # Label children looked up once: `labels()` takes a lock and builds a key on every call.
        latency = {outcome: self._metrics.tier_latency.labels(self._tier, outcome)
                   for outcome in ("ok", "fault", "rejected")}

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "fault"
            try:
                reply = await call(*args, **kwargs)
                outcome = "ok"
                return reply
            except TierRejected:
                outcome = "rejected"
                raise
            finally:
                elapsed = time.perf_counter() - started
                latency[outcome].observe(elapsed)
                clock = _TIER_CLOCK.get()
                if clock is not None:
                    clock.seconds += elapsed

        return timed
