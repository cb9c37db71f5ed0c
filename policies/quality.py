"""RecServe with a quality floor: the window rule decides how many requests a tier keeps; a learned
competence curve decides whether the kept ones are good enough to keep.

Probes (a sample of kept answers also asked of the top tier) give (confidence, agreed) pairs per
tier and scope (task and workload); see `policies.competence`: the curve is a lower confidence bound
of the agreement, so the floor holds with `confidence_level`, not only on average. With too few
probes the plain rule decides. A tier whose answers cannot reach the target at any confidence is
bypassed for that scope until probes say otherwise. Until a tier and scope holds `warmup_probes`
probes it is *warming up*: every answer it keeps (or would have been asked) is probed, so learning
takes about min_probes requests instead of min_probes / probe_rate. With `warmup_answer` "top" (the
default) a warming-up tier's kept answer is verified instead of served: the request goes to the top
tier, whose answer the client gets, and the pair is the probe — no answer the floor has not judged
reaches a client.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from policies.base import Decision, Scope, ThresholdPolicy, WindowKey
from policies.competence import DEFAULT_LEVEL, CompetenceCurve, fit_competence


@dataclass(frozen=True, slots=True)
class QualitySettings:
    target: float = 0.9  # required P(agree with the top tier) at the answer's confidence
    min_probes: int = 20  # fewer probes than this: the plain rule decides
    window: int = 200  # probes remembered per tier and task (follows drift)
    # Fewer probes than this (in the probe store, so shared by replicas): probe every kept answer. 0: off.
    # The gateway builds these from its config (gateway.cascade.runtime.quality_settings);
    # the defaults are the config's.
    warmup_probes: int = 20
    # What a warming-up tier's kept answer gets: "top" — checked against the top tier before answering,
    # whose answer is served (the floor holds from the first request, at the top tier's latency);
    # "kept" — served as the plain rule keeps it, probed in the background.
    warmup_answer: Literal["top", "kept"] = "top"
    # One-sided confidence with which the agreement of a kept answer reaches `target`.
    confidence_level: float = DEFAULT_LEVEL


class ProbeStore(Protocol):
    """Remembers probe results per tier and task and answers their fitted curve.

    Reads are synchronous: a decision must not wait on a network store, so a shared store answers
    from a cache it keeps fresh in the background (`policies.stores.probes_redis`).
    """

    def add(self, key: WindowKey, confidence: float, agreed: bool) -> None: ...

    def curve(self, key: WindowKey) -> CompetenceCurve | None: ...

    def count(self, key: WindowKey) -> int: ...

    async def reset(self, key: WindowKey | None = None) -> None:
        """Forget one tier and task's probes, or all; a shared store's are gone when this returns."""
        ...

    def resize(self, size: int) -> None:
        """Keep at most `size` probes per key from now on (a reload may change the window)."""
        ...

    async def sync(self, key: WindowKey) -> None:
        """Bring `key`'s curve up to date now (for operators' views; decisions never wait on it)."""
        ...


class ProbeWindows:
    """Recent (confidence, agreed) probe results per tier and task, with the fitted curve cached."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pairs: dict[WindowKey, deque[tuple[float, bool]]] = {}
        self._curves: dict[WindowKey, CompetenceCurve | None] = {}

    def add(self, key: WindowKey, confidence: float, agreed: bool) -> None:
        pairs = self._pairs.setdefault(key, deque(maxlen=self._size))
        pairs.append((confidence, agreed))
        self._curves.pop(key, None)

    def curve(self, key: WindowKey) -> CompetenceCurve | None:
        if key not in self._curves:
            self._curves[key] = fit_competence(list(self._pairs.get(key, ())))
        return self._curves[key]

    def count(self, key: WindowKey) -> int:
        return len(self._pairs.get(key, ()))

    async def reset(self, key: WindowKey | None = None) -> None:
        if key is None:
            self._pairs.clear()
            self._curves.clear()
        else:
            self._pairs.pop(key, None)
            self._curves.pop(key, None)

    def resize(self, size: int) -> None:
        if size == self._size:
            return
        self._size = size
        self._pairs = {key: deque(pairs, maxlen=size) for key, pairs in self._pairs.items()}  # keeps the newest
        self._curves.clear()

    async def sync(self, key: WindowKey) -> None:
        return None  # nothing is shared: always up to date


class QualityPolicy:
    """Keep an answer iff the window rule keeps it and its estimated agreement meets the target."""

    name = "quality"
    probe_namespace = name  # its probe windows sit beside its rule's windows (same hash tag in Redis)

    def __init__(self, rule: ThresholdPolicy, probes: ProbeStore, settings: QualitySettings) -> None:
        self._rule = rule
        self._probes = probes
        self._settings = settings

    @property
    def window_namespaces(self) -> tuple[str, ...]:
        """Its rule's (built with a namespace of this policy's own)."""
        return self._rule.window_namespaces

    def _key(self, tier: str, scope: Scope) -> WindowKey:
        return scope.key(self.probe_namespace, tier)

    def _curve(self, tier: str, scope: Scope) -> CompetenceCurve | None:
        curve = self._probes.curve(self._key(tier, scope))
        return curve if curve is not None and curve.probes >= self._settings.min_probes else None

    async def decide(self, tier: str, scope: Scope, confidence: float) -> Decision:
        decision = await self._rule.decide(tier, scope, confidence)
        if decision.escalate:
            return decision
        curve = self._curve(tier, scope)
        level = self._settings.confidence_level
        if curve is not None and curve.agreement_at(confidence, level) < self._settings.target:
            return replace(decision, verdict="escalate", reason="quality")
        if self._settings.warmup_answer == "top" and self.warming(tier, scope):
            return replace(decision, verdict="verify", reason="warmup")
        return decision

    def bypassed(self, tier: str, scope: Scope) -> bool:
        """True when enough probes show the tier's whole answers never reach the target in this scope."""
        curve = self._curve(tier, scope.whole())
        return curve is not None and curve.best(self._settings.confidence_level) < self._settings.target

    async def reset_probes(self, tier: str | None = None, scope: Scope | None = None) -> None:
        """Forget what probes taught about one tier and scope (both given), or about everything."""
        if (tier is None) != (scope is None):
            raise ValueError("reset_probes takes both a tier and a scope, or neither")
        await self._probes.reset(self._key(tier, scope) if tier is not None and scope is not None else None)

    def record_probe(self, tier: str, scope: Scope, confidence: float, agreed: bool) -> None:
        self._probes.add(self._key(tier, scope), confidence, agreed)

    def warming(self, tier: str, scope: Scope, pending: int = 0) -> bool:
        """True while the tier and scope holds fewer than `warmup_probes` probes, counting `pending`
        probes already on their way (the prober's own, not yet recorded)."""
        warmup = self._settings.warmup_probes
        return warmup > 0 and self._probes.count(self._key(tier, scope)) + pending < warmup

    def estimate(self, tier: str, scope: Scope, confidence: float) -> float | None:
        curve = self._curve(tier, scope)
        return curve.agreement_at(confidence, self._settings.confidence_level) if curve is not None else None

    async def sync(self, tier: str, scope: Scope) -> None:
        """Fetch the latest shared probes for this tier and scope (a no-op with in-process probes)."""
        await self._probes.sync(self._key(tier, scope))

    def describe(self, tier: str, scope: Scope) -> dict[str, object]:
        """For operators: probes held, whether they are enough (and whether still warming up, every
        kept answer probed), best reachable agreement (its lower bound), bypass."""
        key = self._key(tier, scope)
        curve = self._probes.curve(key)
        return {"probes": self._probes.count(key), "enough": self._curve(tier, scope) is not None,
                "warming_up": self.warming(tier, scope), "warmup_answer": self._settings.warmup_answer,
                "best_agreement": curve.best(self._settings.confidence_level) if curve is not None else None,
                "target": self._settings.target, "confidence_level": self._settings.confidence_level,
                "bypassed": self.bypassed(tier, scope)}
