"""Probes for the quality policy: a sample of answers a lower tier kept (or would have been asked,
had it not been bypassed) is also asked of the top tier in the background, never delaying the
client; whether the two answers agree teaches the policy the lower tier's competence."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.backends import TierFault, TierRejected, TierReply
from gateway.cascade import CascadeRequest, CascadeResult, Tier
from policies.confidence import response_confidence
from policies.quality import QualityPolicy

log = logging.getLogger("recserve.probes")
_WORD = re.compile(r"[\w.]+", re.UNICODE)


def answer_text(body: Mapping[str, Any]) -> str:
    """The first choice's answer: message content, tool calls, or completion text."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return ""
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, Mapping):
        if isinstance(message.get("content"), str):
            return str(message["content"])
        return repr(message.get("tool_calls") or "")
    text = choice.get("text")
    return text if isinstance(text, str) else ""


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
          similarity: float) -> bool:
    """Same label for classification; token-F1 of at least `similarity` for generation."""
    a, b = answer_text(kept), answer_text(top)
    if task == "classification":
        return _label(a, labels) == _label(b, labels)
    return token_f1(a, b) >= similarity


class Prober:
    """Schedules and runs probes; owns their background tasks (cancelled on close)."""

    def __init__(self, policy: QualityPolicy, tiers: Sequence[Tier], rate: float, similarity: float,
                 rng: random.Random | None = None) -> None:
        self._policy = policy
        self._tiers = {t.config.name: t for t in tiers}
        self._top = tiers[-1]
        self._rate = rate
        self._similarity = similarity
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, request: CascadeRequest, result: CascadeResult) -> None:
        """Sample this finished request's kept and bypassed lower tiers for probing."""
        if not result.reply.complete or request.body.get("stream"):
            return  # streamed answers are not replayed for probes
        for hop in result.hops:
            if hop.tier == self._top.config.name or self._rng.random() >= self._rate:
                continue
            if hop.outcome == "accepted" and hop.confidence is not None:
                self._spawn(self._probe_kept(request, result, hop.tier, hop.confidence))
            elif hop.outcome == "bypassed":
                self._spawn(self._probe_bypassed(request, result, hop.tier))

    def _spawn(self, probe: Any) -> None:
        task = asyncio.get_running_loop().create_task(probe)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, tier: Tier, request: CascadeRequest) -> TierReply | None:
        try:
            return await tier.backend.send(request.route, request.body, timeout_s=tier.config.timeout_s,
                                           headers=request.forward_headers)
        except (TierFault, TierRejected) as exc:
            log.info("probe to tier '%s' failed: %s", tier.config.name, exc)
            return None

    async def _top_answer(self, request: CascadeRequest, result: CascadeResult) -> Mapping[str, Any] | None:
        if result.tier.name == self._top.config.name:
            return result.reply.body
        reply = await self._ask(self._top, request)
        return reply.body if reply is not None else None

    async def _probe_kept(self, request: CascadeRequest, result: CascadeResult, tier: str,
                          confidence: float) -> None:
        top = await self._top_answer(request, result)
        if top is not None:
            agreed = agree(request.task, request.labels, result.reply.body, top, self._similarity)
            self._policy.record_probe(tier, request.task, confidence, agreed)

    async def _probe_bypassed(self, request: CascadeRequest, result: CascadeResult, tier: str) -> None:
        reply = await self._ask(self._tiers[tier], request)
        top = await self._top_answer(request, result)
        if reply is None or top is None:
            return
        confidence = response_confidence(request.task, reply.body.get("choices"), request.labels)
        agreed = agree(request.task, request.labels, reply.body, top, self._similarity)
        # An answer without confidence could never be kept: it counts as a miss at confidence 0.
        self._policy.record_probe(tier, request.task, confidence if confidence is not None else 0.0, agreed)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
