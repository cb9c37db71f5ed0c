"""The quality policy (`recserve/quality`) in replay: the gateway's very `QualityPolicy` on a fresh
memory store; its probes are simulated as `gateway.cascade.probes.Prober` runs them, from the recorded answers:
after each request, one draw of a seeded RNG per lower tier on the path (kept, escalated or bypassed, as
the gateway draws one per hop) decides whether that tier is probed, and while the tier and task holds
fewer than `warmup_probes` probes every kept (or bypassed) one is, as in the gateway. A kept answer is
compared with the recorded top-tier answer (`agree`, the gateway's rule), a bypassed tier's recorded
answer likewise. The probes' calls count in the communication as the prompt shipped once more: one
top-tier call per request shared by all its sampled tiers (none when the top tier served it), plus each
sampled bypassed tier. A bypassed tier is not called on the request's path.
With `warmup_answer` "top" (the config's default) a warming-up tier's kept answer is verified instead of
served: the request's own top-tier call answers it, and the pair (its confidence, agreement with the top
tier's answer) is that tier's probe, recorded with no probe call; a verify hop draws from the RNG like
any other lower hop. Should the top tier have failed (its verified answer served), the probe asks the top
tier again, as the gateway's prober does.
Probes finish before the next request here; in the gateway they run in the background.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.cascade.probes import agree
from gateway.cascade.runtime import quality_settings
from gateway.config.schema import QualityPolicyConfig
from gateway.evaluation.record import TIERS
from gateway.evaluation.replay import BETAS, Outcome, Request, TierAnswer, beta_for, cascade, summarise
from policies.quality import ProbeWindows, QualityPolicy
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore

TARGETS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
PROBE_RATES = (0.02, 0.05, 0.1)
WARMUPS = (0, 10, 20, 40)  # policy.quality.warmup_probes values of the sensitivity sweep
# The quality policy's window rule runs at the authors' W, as the gateway's default config does.
QUALITY_WINDOW = 10000
MAIN_BETA = 0.3
WarmupAnswer = Literal["top", "kept"]  # policy.quality.warmup_answer
WARMUP_ANSWERS: tuple[WarmupAnswer, ...] = ("top", "kept")


@dataclass(frozen=True, slots=True)
class QualityOptions:
    """The quality sweep: every target x every β at `probe_rate`; the other probe rates, the other
    warm-up lengths and the other warm-up answers at `MAIN_BETA`. Probe settings default to the gateway's
    config defaults (`policy.quality`); `warmup_probes` None is the config's default, min_probes (at most
    the window)."""

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
    warmup_answer: WarmupAnswer = QualityPolicyConfig().warmup_answer
    confidence_level: float = QualityPolicyConfig().confidence_level
    other_warmup_answers: tuple[WarmupAnswer, ...] = ()

    @property
    def warmup(self) -> int:
        """`warmup_probes` as the config resolves it."""
        return min(self.min_probes, self.probe_window) if self.warmup_probes is None else self.warmup_probes


DEFAULT_OPTIONS = QualityOptions()  # the config's defaults (a frozen value: safe as an argument default)


def _body(answer: TierAnswer) -> dict[str, Any]:
    message = answer.message if answer.message is not None else {"content": answer.text}
    return {"choices": [{"message": {"role": "assistant", **message}}]}


class SimulatedProber:
    """`gateway.cascade.probes.Prober` on recorded answers: same sampling, same agreement rule, no network."""

    def __init__(self, policy: QualityPolicy, rate: float, similarity: float, seed: int,
                 tiers: Sequence[str] = TIERS) -> None:
        self._policy = policy
        self._rate = rate
        self._similarity = similarity
        self._rng = random.Random(seed)
        self._tiers = tiers

    def after(self, request: Request, outcome: Outcome) -> None:
        """Sample this request's kept, verified and bypassed lower tiers; record what the probes learn."""
        if request.answers[outcome.served].failed:
            return  # the gateway had no answer to return (CascadeFailed): no probes
        sampled = []
        for tier in self._tiers[:-1]:
            if tier not in outcome.visited and tier not in outcome.bypassed:
                continue
            drawn = self._rng.random() < self._rate  # one draw per hop, warming up or not, as the gateway draws
            if tier == outcome.verified:
                sampled.append(tier)  # the warm-up's own probe: the top tier answered the request
                continue
            if not (tier in outcome.bypassed or (outcome.kept and tier == outcome.served)):
                continue
            if drawn or self._policy.warming(tier, request.scope):  # nothing pending: probes finish first here
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
            self._policy.record_probe(tier, request.scope, confidence, self._agree(request, answer, reference))

    def _agree(self, request: Request, answer: TierAnswer, reference: TierAnswer) -> bool:
        if (answer.text is None and answer.message is None) or (reference.text is None and reference.message is None):
            return answer.correct and reference.correct  # hand-made traces carry no answer text
        return agree(request.task, request.labels, _body(answer), _body(reference), self._similarity)


def quality_policy(beta: float | Mapping[str, float], window: int, target: float,
                   options: QualityOptions = DEFAULT_OPTIONS) -> QualityPolicy:
    """The quality policy as the gateway builds it (its rule keeps windows of its own), memory store."""
    rule = RecServePolicy(MemoryWindowStore(), beta_for(beta), window, namespace="quality")
    settings = quality_settings(QualityPolicyConfig(
        target=target, min_probes=options.min_probes, window=options.probe_window, warmup_probes=options.warmup,
        warmup_answer=options.warmup_answer, confidence_level=options.confidence_level))
    return QualityPolicy(rule, ProbeWindows(options.probe_window), settings)


async def run_quality(requests: Sequence[Request], beta: float, target: float, probe_rate: float,
                      options: QualityOptions = DEFAULT_OPTIONS, warm: bool = False) -> dict[str, Any]:
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
              "similarity": options.similarity, "warmup_probes": options.warmup,
              "warmup_answer": options.warmup_answer, "warm": warm, "warmup_requests": warmup}
    summary = summarise(requests, outcomes, "quality", params)
    scopes = {r.scope.name: r.scope for r in requests}
    summary["learned"] = {f"{tier}/{name}": policy.describe(tier, scope) for tier in TIERS[:-1]
                          for name, scope in sorted(scopes.items())}
    return summary
