"""Everything a running gateway holds: tiers with their clients, policies, the window store.
Built once per app in its lifespan (and again on each reload); no module-level state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.backends import build_backend
from gateway.cascade import Tier
from gateway.config import POLICY_NAMES, GatewayConfig, QualityPolicyConfig
from gateway.errors import NotFound
from gateway.metrics import Metrics
from gateway.observer import RequestObserver
from gateway.overrides import Overrides, PolicyOverrides
from gateway.probes import Prober
from gateway.tokens import PromptTokenCounter
from policies.base import ThresholdPolicy, WindowStore
from policies.casserve import CasServePolicy
from policies.quality import ProbeStore, ProbeWindows, QualityPolicy, QualitySettings
from policies.recserve import RecServePolicy
from policies.stores.factory import Stores, build_stores

MODEL_PREFIX = "recserve"


def quality_settings(quality: QualityPolicyConfig) -> QualitySettings:
    """The quality policy's settings from its config section (the gateway's and `eval live`'s replay)."""
    return QualitySettings(quality.target, quality.min_probes, quality.window, quality.warmup_probes,
                           quality.warmup_answer)


def model_ids(config: GatewayConfig) -> list[str]:
    """The model names a gateway with `config` answers to (`GET /v1/models`, the OpenAPI document)."""
    return [MODEL_PREFIX, *(f"{MODEL_PREFIX}/{p}" for p in POLICY_NAMES),
            *(f"{MODEL_PREFIX}/{t.name}" for t in config.tiers)]


@dataclass(frozen=True, slots=True)
class ModelBinding:
    """What a model name resolves to: the policy that decides and the tiers it may use."""

    policy: ThresholdPolicy
    tiers: list[Tier]


@dataclass
class Runtime:
    config: GatewayConfig
    tiers: list[Tier]
    policies: dict[str, ThresholdPolicy]
    store: WindowStore
    tokens: PromptTokenCounter
    client_keys: tuple[str, ...]
    observer: RequestObserver
    overrides: PolicyOverrides  # β and θ as changed at run time (PATCH /admin/policy)
    prober: Prober  # background probes that teach the quality policy
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @classmethod
    async def start(cls, config: GatewayConfig, *,
                    store: WindowStore | None = None, probes: ProbeStore | None = None,
                    metrics: Metrics | None = None, overrides: Overrides | None = None) -> Runtime:
        """Build clients and policies for `config`. A `store` and `probes` passed in are borrowed (not
        closed here): that is how windows and probe windows outlive a reload."""
        closers: list[Callable[[], Awaitable[None]]] = []
        quality = config.policy.quality
        if store is None:
            built = await build_store(config)
            closers.append(built.close)
            store, probes = built.windows, probes if probes is not None else built.probes
        if probes is None:
            probes = ProbeWindows(quality.window)
        metrics = metrics or Metrics()
        tokens = PromptTokenCounter()
        observer = RequestObserver(metrics, {t.name: i for i, t in enumerate(config.tiers)}, tokens,
                                   include_prompts=config.logging.include_prompts)
        tiers: list[Tier] = []
        for level, tier_config in enumerate(config.tiers):
            backend = build_backend(tier_config)
            closers.append(backend.aclose)
            tiers.append(Tier(tier_config, observer.timed(tier_config.name, backend),
                              asyncio.Semaphore(tier_config.max_concurrency), level))
        layer = PolicyOverrides(config, overrides)
        quality_policy = QualityPolicy(
            RecServePolicy(store, layer.beta_for, config.policy.recserve.window, namespace="quality"),
            probes, quality_settings(quality))
        prober = Prober(quality_policy, tiers, quality.probe_rate, quality.similarity, metrics)
        closers.append(prober.aclose)
        policies: dict[str, ThresholdPolicy] = {
            "recserve": RecServePolicy(store, layer.beta_for, config.policy.recserve.window),
            "casserve": CasServePolicy(layer.threshold_for),
            "quality": quality_policy,
        }
        return cls(config, tiers, policies, store, tokens, config.auth.client_keys(), observer, layer, prober,
                   closers)

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            await close()

    def model_ids(self) -> list[str]:
        return model_ids(self.config)

    def resolve(self, model: str, *, uses_tools: bool = False) -> ModelBinding:
        """`recserve` → the default policy; `recserve/<policy>`; `recserve/<tier>` pins one tier."""
        if model == MODEL_PREFIX:
            choice = self.config.policy.default
        elif model.startswith(MODEL_PREFIX + "/"):
            choice = model[len(MODEL_PREFIX) + 1:]
        else:
            raise self._unknown(model)
        if choice in self.policies:
            pinned = self.config.policy.tool_requests if uses_tools else None
            if pinned is not None:
                return self._pinned(pinned)
            return ModelBinding(self.policies[choice], self.tiers)
        for tier in self.tiers:
            if tier.config.name == choice:
                return self._pinned(choice)
        raise self._unknown(model)

    def _pinned(self, name: str) -> ModelBinding:
        tier = next(t for t in self.tiers if t.config.name == name)
        return ModelBinding(self.policies["recserve"], [tier])

    def _unknown(self, model: str) -> NotFound:
        return NotFound(f"The model '{model}' does not exist. Available: {', '.join(self.model_ids())}.",
                        param="model", code="model_not_found")


async def build_store(config: GatewayConfig) -> Stores:
    """The window store `windows:` asks for, the probe windows beside it, and how to close both."""
    return build_stores(config.windows, config.policy.quality.window)
