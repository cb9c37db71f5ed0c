"""The cascade's loop in process, through its `TierCall` seam: every branch of `run_cascade` with tiers
that are plain functions returning `TierReply` objects (or raising) and a scripted policy. The same
branches over real sockets are in test_cascade_e2e, test_faults and test_streaming; these pin the
loop's own bookkeeping (hops, path, best answer, uplink tokens, what is released) one branch at a time."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.cascade.climb import CascadeFailed, CascadeRequest, CascadeResult, Tier, TierCall, run_cascade
from gateway.config.schema import TierConfig
from gateway.protocol import Route
from gateway.telemetry.tokens import PromptTokens
from gateway.upstream.backends import TierFault, TierRejected, TierReply, TierStream
from policies.base import Decision, DecisionReason, Scope, ThresholdPolicy, Verdict
from policies.quality import ProbeWindows, QualityPolicy, QualitySettings

NAMES = ("device", "edge", "cloud")
PROMPT_TOKENS = 3  # every scripted tier reports this usage.prompt_tokens
COUNTED_TOKENS = 7  # what the gateway's own count says (used when a tier reports none)


class NoBackend:
    """Tiers here are asked through the TierCall seam only: nothing may reach a backend."""

    async def send(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                   headers: Mapping[str, str]) -> TierReply:
        raise AssertionError("the cascade called a backend past its TierCall")

    async def open_stream(self, route: Route, body: dict[str, Any], *, timeout_s: float,
                          headers: Mapping[str, str]) -> TierStream:
        raise AssertionError("the cascade opened a stream past its TierCall")

    async def aclose(self) -> None:
        return None


def make_tiers(**settings: dict[str, Any]) -> list[Tier]:
    """device, edge and cloud; `settings` per tier name override TierConfig fields (and `gate`)."""
    tiers = []
    for level, name in enumerate(NAMES):
        options = dict(settings.get(name, {}))
        gate = options.pop("gate", None) or asyncio.Semaphore(4)
        config = TierConfig(name=name, base_url=f"http://127.0.0.1:1/{name}", model=f"{name}-model", **options)
        tiers.append(Tier(config, NoBackend(), gate, level))
    return tiers


def make_request(deadline_s: float = 30.0) -> CascadeRequest:
    return CascadeRequest(route="chat/completions", body={"messages": [{"role": "user", "content": "q"}]},
                          scope=Scope("generation"), labels=None, deadline=time.monotonic() + deadline_s,
                          forward_headers={}, prompt_tokens=PromptTokens(lambda _: COUNTED_TOKENS, {}))


def body(tier: str, confidence: float | None) -> dict[str, Any]:
    """A chat answer of one token; its generation confidence is `confidence` (None: no logprobs)."""
    logprobs = None if confidence is None else {
        "content": [{"token": "ok", "logprob": math.log(confidence), "top_logprobs": []}]}
    return {"model": f"{tier}-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "logprobs": logprobs,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 1, "total_tokens": PROMPT_TOKENS + 1}}


async def _no_more() -> AsyncIterator[dict[str, Any]]:
    return
    yield {}  # an async generator that ends at once: the live rest of an early-commit stream


Answer = float | None | BaseException  # a confidence (None: no logprobs), or what the tier raises


@dataclass
class Tiers:
    """The TierCall under test: each tier answers as scripted and every call and release is logged."""

    script: dict[str, Answer]
    prefix: frozenset[str] = frozenset()  # tiers answering with an open stream's prefix (early commit)
    log: list[str] = field(default_factory=list)
    replies: dict[str, TierReply] = field(default_factory=dict)

    async def __call__(self, tier: Tier, request: CascadeRequest, timeout_s: float, final: bool) -> TierReply:
        name = tier.config.name
        self.log.append(f"call {name}" + (" final" if final else ""))
        answer = self.script[name]
        if isinstance(answer, BaseException):
            raise answer

        async def release() -> None:
            self.log.append(f"release {name}")

        reply = TierReply(body(name, answer), release=release, tail=_no_more() if name in self.prefix else None)
        self.replies[name] = reply
        return reply

    @property
    def called(self) -> list[str]:
        return [entry.split()[1] for entry in self.log if entry.startswith("call ")]

    @property
    def released(self) -> list[str]:
        return [entry.split()[1] for entry in self.log if entry.startswith("release ")]


@dataclass
class ScriptedPolicy:
    """A ThresholdPolicy whose verdict per tier is scripted; it remembers what it was asked."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)  # tiers not named keep
    reasons: dict[str, DecisionReason] = field(default_factory=dict)
    bypass: frozenset[str] = frozenset()
    threshold: float = 0.5
    name: str = "scripted"
    window_namespaces: tuple[str, ...] = ()
    decided: list[tuple[str, float]] = field(default_factory=list)

    async def decide(self, tier: str, scope: Scope, confidence: float) -> Decision:
        self.decided.append((tier, confidence))
        return Decision(verdict=self.verdicts.get(tier, "keep"), threshold=self.threshold,
                        reason=self.reasons.get(tier))

    def bypassed(self, tier: str, scope: Scope) -> bool:
        return tier in self.bypass


async def cascade(tiers: Tiers, policy: ThresholdPolicy | None = None, *, request: CascadeRequest | None = None,
                  tier_list: list[Tier] | None = None) -> CascadeResult:
    call: TierCall = tiers
    return await run_cascade(request or make_request(), tier_list or make_tiers(), policy or ScriptedPolicy(), call)


def outcomes(result: CascadeResult | CascadeFailed) -> list[tuple[str, str, str | None]]:
    return [(hop.tier, hop.outcome, hop.reason) for hop in result.hops]


async def test_accepted_at_the_first_tier() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9})
    result = await cascade(tiers)
    assert (result.tier.name, result.path, result.reply) == ("device", "device", tiers.replies["device"])
    assert outcomes(result) == [("device", "accepted", None)]
    assert result.confidence == pytest.approx(0.9) and result.threshold == 0.5
    assert not result.degraded and result.uplink_tokens == 0  # the device is local: nothing shipped up
    assert tiers.called == ["device"] and tiers.released == []  # the answer served is the client's to close


async def test_escalated_to_a_tier_that_keeps() -> None:
    tiers = Tiers({"device": 0.2, "edge": 0.8, "cloud": 0.9})
    policy = ScriptedPolicy({"device": "escalate"})
    result = await cascade(tiers, policy)
    assert result.path == "device>edge" and result.tier.name == "edge"
    assert outcomes(result) == [("device", "escalated", None), ("edge", "accepted", None)]
    escalated = result.hops[0]
    assert escalated.confidence == pytest.approx(0.2) and escalated.threshold == 0.5
    assert escalated.completion_tokens == 1  # an answer not served still cost its tokens
    assert result.uplink_tokens == PROMPT_TOKENS  # the edge's own usage.prompt_tokens
    assert [tier for tier, _ in policy.decided] == ["device", "edge"]
    assert tiers.called == ["device", "edge"] and tiers.released == ["device"]


async def test_the_last_tier_serves_without_a_decision() -> None:
    tiers = Tiers({"device": 0.2, "edge": 0.2, "cloud": 0.1})
    policy = ScriptedPolicy({"device": "escalate", "edge": "escalate"})
    result = await cascade(tiers, policy)
    assert result.path == "device>edge>cloud" and outcomes(result)[-1] == ("cloud", "served", None)
    assert [tier for tier, _ in policy.decided] == ["device", "edge"]  # the last tier never escalates
    assert result.threshold is None and result.confidence == pytest.approx(0.1)
    assert result.uplink_tokens == 2 * PROMPT_TOKENS
    assert tiers.log[-1] == "release edge" and "call cloud final" in tiers.log


async def test_no_confidence_escalates_without_asking_the_policy() -> None:
    tiers = Tiers({"device": None, "edge": 0.8, "cloud": 0.9})
    policy = ScriptedPolicy()
    result = await cascade(tiers, policy)
    assert result.path == "device>edge"
    assert outcomes(result)[0] == ("device", "escalated", "no_confidence")
    assert result.hops[0].confidence is None and result.hops[0].threshold is None
    assert [tier for tier, _ in policy.decided] == ["edge"]  # the device's window is not touched


async def test_a_fault_at_a_lower_tier_escalates() -> None:
    tiers = Tiers({"device": TierFault("connect", "refused"), "edge": TierFault("status", "HTTP 503", 503),
                   "cloud": 0.9})
    result = await cascade(tiers)
    assert result.path == "device!>edge!>cloud" and result.tier.name == "cloud" and not result.degraded
    assert outcomes(result) == [("device", "fault", "connect"), ("edge", "fault", "status"),
                                ("cloud", "served", None)]
    # The edge's prompt went up before it failed (our own count: it reported no usage); the device's did not.
    assert result.uplink_tokens == COUNTED_TOKENS + PROMPT_TOKENS


async def test_a_fault_at_the_last_tier_returns_the_best_lower_answer_degraded() -> None:
    tiers = Tiers({"device": 0.1, "edge": 0.3, "cloud": TierFault("timeout", "timed out")})
    policy = ScriptedPolicy({"device": "escalate", "edge": "escalate"})
    result = await cascade(tiers, policy)
    assert result.degraded and result.tier.name == "edge" and result.reply is tiers.replies["edge"]
    assert result.path == "device>edge>cloud!"
    assert outcomes(result)[-1] == ("cloud", "failed", "timeout")
    assert result.confidence == pytest.approx(0.3) and result.threshold == 0.5  # the edge's, as judged
    assert tiers.released == ["device"]  # the degraded answer is served, so not released


async def test_a_degraded_answer_may_be_one_without_confidence() -> None:
    tiers = Tiers({"device": None, "edge": TierFault("connect", "refused"), "cloud": TierFault("invalid", "junk")})
    result = await cascade(tiers)
    assert result.degraded and result.tier.name == "device" and result.confidence is None
    assert result.path == "device>edge!>cloud!"


@pytest.mark.parametrize(("cloud_timeout_s", "timed_out"), [(60.0, True), (1.0, False)])
async def test_cascade_failed_tells_a_deadline_from_a_fault(cloud_timeout_s: float, timed_out: bool) -> None:
    # A timeout is the deadline's only when the tier was given all the time that was left.
    tiers = Tiers({"device": TierFault("connect", "refused"), "edge": TierFault("limit", "too big"),
                   "cloud": TierFault("timeout", "timed out")})
    with pytest.raises(CascadeFailed) as failed:
        await cascade(tiers, request=make_request(deadline_s=10.0),
                      tier_list=make_tiers(cloud={"timeout_s": cloud_timeout_s}))
    assert failed.value.timed_out is timed_out
    assert outcomes(failed.value) == [("device", "fault", "connect"), ("edge", "fault", "limit"),
                                      ("cloud", "failed", "timeout")]
    assert str(failed.value) == "tier 'cloud' failed: timed out"


async def test_cascade_failed_on_a_fault_is_not_a_timeout() -> None:
    tiers = Tiers({name: TierFault("status", "HTTP 500", 500) for name in NAMES})
    with pytest.raises(CascadeFailed) as failed:
        await cascade(tiers)
    assert not failed.value.timed_out and str(failed.value) == "tier 'cloud' failed: HTTP 500"


async def test_a_busy_lower_tier_escalates_after_its_queue_timeout() -> None:
    gate = asyncio.Semaphore(1)
    await gate.acquire()  # the device's only slot is taken
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9})
    result = await cascade(tiers, tier_list=make_tiers(device={"gate": gate, "queue_timeout_s": 0.01}))
    assert result.path == "device!>edge" and outcomes(result)[0] == ("device", "busy", "busy")
    assert tiers.called == ["edge"]
    assert result.uplink_tokens == PROMPT_TOKENS  # a busy tier was never sent the prompt
    assert gate.locked()  # its slot was never taken, so none is given back


async def test_a_busy_last_tier_queues_until_the_deadline() -> None:
    gate = asyncio.Semaphore(1)
    await gate.acquire()
    tiers = Tiers({"device": TierFault("connect", "refused"), "edge": TierFault("connect", "refused"), "cloud": 0.9})
    with pytest.raises(CascadeFailed) as failed:
        # queue_timeout_s bounds the wait of lower tiers only: the last one has nowhere else to go.
        await cascade(tiers, request=make_request(deadline_s=0.05),
                      tier_list=make_tiers(cloud={"gate": gate, "queue_timeout_s": 0.0}))
    assert failed.value.timed_out and str(failed.value) == "tier 'cloud' was busy"
    assert outcomes(failed.value)[-1] == ("cloud", "failed", "busy")
    assert tiers.called == ["device", "edge"]


async def test_a_busy_last_tier_with_a_lower_answer_degrades() -> None:
    gate = asyncio.Semaphore(1)
    await gate.acquire()
    tiers = Tiers({"device": 0.2, "edge": 0.9, "cloud": 0.9})
    result = await cascade(tiers, ScriptedPolicy({"device": "escalate", "edge": "escalate"}),
                           request=make_request(deadline_s=0.05), tier_list=make_tiers(cloud={"gate": gate}))
    assert result.degraded and result.tier.name == "edge" and result.path == "device>edge>cloud!"


async def test_a_tier_is_skipped_when_the_time_left_is_below_its_min_budget() -> None:
    tiers = Tiers({"device": 0.2, "edge": 0.9, "cloud": 0.9})
    result = await cascade(tiers, ScriptedPolicy({"device": "escalate"}), request=make_request(deadline_s=10.0),
                           tier_list=make_tiers(edge={"min_budget_s": 20.0}))
    assert result.path == "device>edge!>cloud" and result.tier.name == "cloud"
    assert outcomes(result)[1] == ("edge", "skipped", "budget")
    assert tiers.called == ["device", "cloud"]


async def test_no_time_left_skips_every_tier_and_fails_as_a_timeout() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9})
    with pytest.raises(CascadeFailed) as failed:
        await cascade(tiers, request=make_request(deadline_s=-1.0))
    assert failed.value.timed_out and str(failed.value) == "no tier could answer in time"
    assert outcomes(failed.value) == [(name, "skipped", "budget") for name in NAMES]
    assert tiers.called == []


async def test_a_bypassed_tier_is_not_asked() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9})
    policy = ScriptedPolicy(bypass=frozenset({"device"}))
    result = await cascade(tiers, policy)
    assert result.path == "device~>edge" and result.tier.name == "edge"
    assert outcomes(result)[0] == ("device", "bypassed", "quality")
    assert tiers.called == ["edge"] and [tier for tier, _ in policy.decided] == ["edge"]


async def test_the_last_tier_is_never_bypassed() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9})
    result = await cascade(tiers, ScriptedPolicy(bypass=frozenset(NAMES)))
    assert result.path == "device~>edge~>cloud" and result.tier.name == "cloud"


async def test_verify_skips_to_the_top_tier_and_serves_its_answer() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.6})
    result = await cascade(tiers, ScriptedPolicy({"device": "verify"}, {"device": "warmup"}))
    assert result.path == "device?>cloud" and result.tier.name == "cloud" and not result.degraded
    verified = result.hops[0]
    assert (verified.outcome, verified.reason) == ("verify", "warmup")
    assert verified.answer == tiers.replies["device"].body  # compared with the top tier's by the probe
    assert verified.completion_tokens == 1
    assert tiers.called == ["device", "cloud"]  # the tiers in between are not asked
    assert tiers.released == ["device"]


async def test_verify_with_the_top_tier_failing_serves_the_verified_answer_degraded() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": TierFault("status", "HTTP 502", 502)})
    result = await cascade(tiers, ScriptedPolicy({"device": "verify"}, {"device": "warmup"}))
    assert result.degraded and result.tier.name == "device" and result.reply is tiers.replies["device"]
    assert result.path == "device?>cloud!" and result.confidence == pytest.approx(0.9)
    assert tiers.released == []


async def test_a_warming_up_quality_floor_verifies_through_the_top_tier() -> None:
    # The real quality policy over a rule that always keeps: with no probes yet the tier is warming up.
    quality = QualityPolicy(ScriptedPolicy(), ProbeWindows(10), QualitySettings(warmup_probes=2))
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.7})
    result = await cascade(tiers, quality)
    assert result.path == "device?>cloud" and outcomes(result)[0] == ("device", "verify", "warmup")
    quality.record_probe("device", Scope("generation"), 0.9, True)
    quality.record_probe("device", Scope("generation"), 0.9, True)
    result = await cascade(Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.7}), quality)
    assert result.path == "device"  # warmed up (and too few probes for the curve): the rule keeps


async def test_a_rejected_request_propagates_with_its_path() -> None:
    tiers = Tiers({"device": 0.2, "edge": TierRejected(400, "bad request", param="messages"), "cloud": 0.9})
    with pytest.raises(TierRejected) as rejected:
        await cascade(tiers, ScriptedPolicy({"device": "escalate"}))
    assert rejected.value.path == "device>edge!" and rejected.value.status == 400
    assert tiers.called == ["device", "edge"]  # no other tier would answer it differently
    assert tiers.released == ["device"]  # nothing is served: every answer so far is closed


async def test_an_escalated_early_commit_prefix_is_released_at_once_and_never_served() -> None:
    tiers = Tiers({"device": 0.2, "edge": 0.2, "cloud": TierFault("connect", "refused")},
                  prefix=frozenset({"device", "edge"}))
    with pytest.raises(CascadeFailed):  # a cut-off prefix is no answer to fall back on
        await cascade(tiers, ScriptedPolicy({"device": "escalate", "edge": "escalate"}))
    # Each escalated stream is closed before the next tier is asked, not only when the cascade ends.
    assert tiers.log[:5] == ["call device", "release device", "call edge", "release edge", "call cloud final"]
    assert set(tiers.released) == {"device", "edge"}


async def test_a_kept_early_commit_prefix_is_served_open() -> None:
    tiers = Tiers({"device": 0.9, "edge": 0.9, "cloud": 0.9}, prefix=frozenset({"device"}))
    result = await cascade(tiers)
    assert result.path == "device" and not result.reply.complete and tiers.released == []
