"""Probes for the quality policy: a sample of answers a lower tier kept (or would have been asked,
had it not been bypassed) is also asked of the top tier in the background, never delaying the
client; whether the two answers agree teaches the policy the lower tier's competence. Streamed
answers are probed once the stream has ended. Probe calls and their uplink prompt tokens are counted
in the metrics, apart from the requests'.

Warm-up: while a tier and task holds fewer than `warmup_probes` probes in the probe store (shared by
replicas with Redis), every answer it kept, or every request that bypassed it, is probed; then
`probe_rate` applies. With `warmup_answer` "top" the kept answer was not served but verified: the
request went on to the top tier (a "verify" hop), so its probe needs no call of its own. One RNG draw
per lower hop is made either way, so warm-up never shifts the draws. This prober's own probes in
flight count towards the warm-up at once; other replicas' count once recorded (and, with Redis, read
back: at most every 0.2 s), so replicas warming up together may overshoot by the probes in flight
between them."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.cascade.climb import CascadeRequest, CascadeResult, Hop, Tier, prompt_tokens_of, reported_tokens
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.savings import SavingsRates
from gateway.upstream.backends import TierFault, TierRejected, TierReply
from policies.agreement import expects_json, json_answers_agree, tool_calls_agree
from policies.base import Scope
from policies.code_similarity import CODE_AGREEMENT, code_similarity, is_code_answer
from policies.quality import QualityPolicy

log = logging.getLogger("recserve.probes")
_WORD = re.compile(r"[\w.]+", re.UNICODE)


def _first_choice(body: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return {}
    return choices[0]


def answer_text(body: Mapping[str, Any]) -> str:
    """The first choice's text: message content or completion text ("" for a tool-call-only answer)."""
    choice = _first_choice(body)
    message = choice.get("message")
    if isinstance(message, Mapping):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def answer_tool_calls(body: Mapping[str, Any]) -> Any:
    """The first choice's `message.tool_calls` as sent (None when it made no call)."""
    message = _first_choice(body).get("message")
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    return calls or None  # [] is no call, as null is


def _words(text: str) -> list[str]:
    return [w.casefold().strip(".") for w in _WORD.findall(text) if w.strip(".")]


def _label(text: str, labels: Sequence[str] | None) -> str:
    words = _words(text)
    first = words[0] if words else ""
    for label in labels or ():
        if label.casefold().startswith(first) and first:
            return label.casefold()
    return first


def token_f1(a: str, b: str) -> float:
    left, right = _words(a), _words(b)
    if not left or not right:
        return float(left == right)
    common = sum(min(left.count(w), right.count(w)) for w in set(left))
    if common == 0:
        return 0.0
    precision, recall = common / len(left), common / len(right)
    return 2 * precision * recall / (precision + recall)


def agree(task: str, labels: Sequence[str] | None, kept: Mapping[str, Any], top: Mapping[str, Any],
          similarity: float, code_similarity_at: float = CODE_AGREEMENT, response_format: Any = None) -> bool:
    """Structure first (policies.agreement): when either answer calls tools, the same calls (name and
    normalised arguments, in any order), whatever the text; when the request asked for JSON
    (`response_format`), the same parsed values. Otherwise same label for classification; for
    generation, when both answers carry code (a fenced block defining a function or class), their
    normalised code tokens alike to `code_similarity_at` (policies.code_similarity; raw-text token-F1
    does not predict whether code behaves alike), else token-F1 of at least `similarity`."""
    kept_calls, top_calls = answer_tool_calls(kept), answer_tool_calls(top)
    if kept_calls is not None or top_calls is not None:
        return tool_calls_agree(kept_calls, top_calls)
    a, b = answer_text(kept), answer_text(top)
    if expects_json(response_format):
        return json_answers_agree(a, b)
    if task == "classification":
        return _label(a, labels) == _label(b, labels)
    if is_code_answer(a) and is_code_answer(b):
        return code_similarity(a, b) >= code_similarity_at
    return token_f1(a, b) >= similarity


# Called with the whole streamed answer once the client has it (see `Prober.after`).
StreamProbes = Callable[[Mapping[str, Any]], None]
_STREAM_KEYS = frozenset({"stream", "stream_options"})


class Prober:
    """Schedules and runs probes; owns their background tasks (cancelled on close)."""

    def __init__(self, policy: QualityPolicy, tiers: Sequence[Tier], rate: float, similarity: float,
                 metrics: Metrics, rng: random.Random | None = None, rates: SavingsRates | None = None) -> None:
        self._policy = policy
        self._tiers = {t.config.name: t for t in tiers}
        self._top = tiers[-1]
        self._rate = rate
        self._similarity = similarity
        self._metrics = metrics
        self._rates = rates  # probes are costed in the savings too
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: Counter[tuple[str, Scope]] = Counter()  # probes sampled, not yet recorded, per key

    @property
    def policy(self) -> QualityPolicy:
        """The policy these probes teach."""
        return self._policy

    def after(self, request: CascadeRequest, result: CascadeResult) -> StreamProbes | None:
        """Sample this finished request's kept and bypassed lower tiers for probing.

        A plain answer is probed at once. A streamed one is whole only once the client has it all: the
        sampled probes come back as a function to call with the whole answer when the stream ends
        (None when nothing was sampled).
        """
        hops = [hop for hop in result.hops if self._sampled(request, hop)]
        if not hops:
            return None
        # Probes ask for a plain answer: they compare whole answers and nobody reads them as they come.
        plain = replace(request, body={k: v for k, v in request.body.items() if k not in _STREAM_KEYS})
        if request.body.get("stream"):
            return lambda answer: self._spawn(self._probe(plain, result, hops, answer), request, hops)
        if result.reply.complete:
            self._spawn(self._probe(plain, result, hops, result.reply.body), request, hops)
        return None

    @staticmethod
    def _key(request: CascadeRequest, hop: Hop) -> tuple[str, Scope]:
        """The (tier, scope) a probe of this hop is recorded under (early-commit streams: the prefix's)."""
        if hop.outcome in ("accepted", "verify"):
            return hop.tier, request.scope
        return hop.tier, request.scope.whole()

    def _sampled(self, request: CascadeRequest, hop: Hop) -> bool:
        if hop.tier == self._top.config.name:
            return False
        drawn = self._rng.random() < self._rate  # one draw per lower hop, warming up or not
        if hop.outcome == "verify" and hop.confidence is not None:
            return True  # the warm-up's own probe: the top tier already answered the request
        if not ((hop.outcome == "accepted" and hop.confidence is not None) or hop.outcome == "bypassed"):
            return False
        tier, scope = self._key(request, hop)
        return drawn or self._policy.warming(tier, scope, self._pending[tier, scope])

    def _spawn(self, probe: Coroutine[Any, Any, None], request: CascadeRequest, hops: Sequence[Hop]) -> None:
        self._pending.update(self._key(request, hop) for hop in hops)  # settled by `_probe`, hop by hop
        task = asyncio.get_running_loop().create_task(probe)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle(self, key: tuple[str, Scope]) -> None:
        """A probe of `key` has recorded (or failed, or was cancelled): no longer pending."""
        self._pending[key] -= 1
        if self._pending[key] <= 0:
            del self._pending[key]

    async def _ask(self, tier: Tier, request: CascadeRequest) -> TierReply | None:
        reply: TierReply | None = None
        failed: Hop | None = None
        attempt = request.watch.attempt(tier, request, probe=True) if request.watch is not None else None
        try:
            reply = await tier.backend.send(request.route, request.body, timeout_s=tier.config.timeout_s,
                                            headers=attempt.headers if attempt else request.forward_headers)
        except (TierFault, TierRejected) as exc:
            log.info("probe to tier '%s' failed: %s", tier.config.name, exc)
            failed = Hop(tier.config.name, "failed", reason=exc.kind if isinstance(exc, TierFault) else "rejected")
        finally:
            if attempt is not None:
                attempt.end(failed, reply)
        body = reply.body if reply else {}
        prompt = await prompt_tokens_of(body, request.prompt_tokens)
        if tier.level > 0:  # the prompt went up whether or not an answer came back, as in the cascade
            self._metrics.probe_sent(tier.config.name, prompt)
        if self._rates is not None:
            cost = self._rates.probe(tier.config.name, prompt, reported_tokens(body, "completion_tokens") or 0)
            self._metrics.savings.probe(request.tenant, request.workload or request.task, cost,
                                        self._rates.max_workloads)
        return reply

    async def _top_answer(self, request: CascadeRequest, result: CascadeResult,
                          answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if result.tier.name == self._top.config.name:
            return answer
        reply = await self._ask(self._top, request)
        return reply.body if reply is not None else None

    async def _probe(self, request: CascadeRequest, result: CascadeResult, hops: Sequence[Hop],
                     answer: Mapping[str, Any]) -> None:
        """One top-tier answer serves every sampled hop of the request."""
        unsettled = [self._key(request, hop) for hop in hops]
        try:
            top = await self._top_answer(request, result, answer)
            for hop in hops:
                if hop.outcome == "accepted" and hop.confidence is not None:
                    # Recorded under the key the decision consulted (early-commit streams: the prefix's).
                    self._record(request, hop.tier, request.scope, hop.confidence, answer, top)
                elif hop.outcome == "verify" and hop.confidence is not None:
                    await self._probe_verified(request, hop, hop.confidence, top)
                elif top is None:
                    self._count(hop.tier, request.task, "failed")
                else:
                    await self._probe_bypassed(request, hop.tier, top)
                self._settle(unsettled.pop(0))
        finally:
            for key in unsettled:
                self._settle(key)

    async def _probe_verified(self, request: CascadeRequest, hop: Hop, confidence: float,
                              top: Mapping[str, Any] | None) -> None:
        """A verify hop's answer against the top tier's. An early-commit prefix was cut off when the
        request went up, so that tier is asked again for its whole answer (as a probe call)."""
        kept = hop.answer
        if kept is None and top is not None:
            reply = await self._ask(self._tiers[hop.tier], request)
            kept = reply.body if reply is not None else None
        if kept is None:
            self._count(hop.tier, request.task, "failed")
            return
        self._record(request, hop.tier, request.scope, confidence, kept, top)

    async def _probe_bypassed(self, request: CascadeRequest, tier: str, top: Mapping[str, Any]) -> None:
        reply = await self._ask(self._tiers[tier], request)
        if reply is None:
            self._count(tier, request.task, "failed")
            return
        confidence = request.confidence(reply.body)
        # An answer without confidence could never be kept: it counts as a miss at confidence 0.
        self._record(request, tier, request.scope.whole(), confidence if confidence is not None else 0.0, reply.body,
                     top)

    def _record(self, request: CascadeRequest, tier: str, scope: Scope, confidence: float,
                answer: Mapping[str, Any], top: Mapping[str, Any] | None) -> None:
        if top is None:
            self._count(tier, request.task, "failed")
            return
        agreed = agree(request.task, request.labels, answer, top, self._similarity,
                       response_format=request.body.get("response_format"))
        self._policy.record_probe(tier, scope, confidence, agreed)
        self._count(tier, request.task, "agreed" if agreed else "disagreed")

    def _count(self, tier: str, task: str, outcome: str) -> None:
        self._metrics.probes.labels(tier, task, outcome).inc()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
