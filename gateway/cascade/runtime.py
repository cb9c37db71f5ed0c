"""Everything a running gateway holds: tiers with their clients, policies, the window store.
Built once per app in its lifespan (and again on each reload); no module-level state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.cascade.climb import Tier
from gateway.cascade.overrides import Overrides, PolicyOverrides
from gateway.cascade.probes import Prober
from gateway.cascade.workloads import Workload, WorkloadRegistry, derived_workload
from gateway.config.schema import POLICY_NAMES, GatewayConfig, QualityPolicyConfig
from gateway.config.tenants import Tenants
from gateway.errors import NotFound
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.observer import RequestObserver
from gateway.telemetry.savings import SavingsRates
from gateway.telemetry.tokens import PromptTokenCounter
from gateway.upstream.tier_client import build_backend
from gateway.upstream.tokenizer import TierTokenizer
from policies.base import TASKS, Learning, Scope, Task, ThresholdPolicy, WindowStore
from policies.casserve import CasServePolicy
from policies.quality import ProbeStore, ProbeWindows, QualityPolicy, QualitySettings
from policies.recserve import RecServePolicy
from policies.schemas import SchemaValidators
from policies.stores.factory import Stores, build_stores

MODEL_PREFIX = "recserve"
TOKENIZER_WAIT_S = 10.0  # how long startup waits for tiktoken's encoding (a download has no timeout)


def quality_settings(quality: QualityPolicyConfig) -> QualitySettings:
    """The quality policy's settings from its config section (the gateway's and `eval live`'s replay)."""
    return QualitySettings(target=quality.target, min_probes=quality.min_probes, window=quality.window,
                           warmup_probes=quality.warmup_probes, warmup_answer=quality.warmup_answer,
                           confidence_level=quality.confidence_level)


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
    tenants: Tenants  # the client keys accepted, each with its tenant
    observer: RequestObserver
    overrides: PolicyOverrides  # β and θ as changed at run time (PATCH /admin/policy)
    prober: Prober  # background probes that teach the quality policy
    probes: ProbeStore
    workloads: WorkloadRegistry  # outlives reloads, like the stores
    workload_by_key: dict[str, str]  # client key -> its default workload
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _cleanups: set[asyncio.Task[None]] = field(default_factory=set)
    validators: SchemaValidators = field(default_factory=SchemaValidators)  # clients' schemas, compiled once
    _tokenizers: dict[str, TierTokenizer] = field(default_factory=dict)

    @classmethod
    async def start(cls, config: GatewayConfig, *,
                    store: WindowStore | None = None, probes: ProbeStore | None = None,
                    metrics: Metrics | None = None, overrides: Overrides | None = None,
                    workloads: WorkloadRegistry | None = None) -> Runtime:
        """Build clients and policies for `config`. A `store`, `probes` and `workloads` passed in are
        borrowed (not closed here): that is how windows and probe windows outlive a reload."""
        closers: list[Callable[[], Awaitable[None]]] = []
        tokens = PromptTokenCounter()
        # In a worker thread, and now: loaded on first use, it would hold the event loop (the first
        # tier answering without usage stalled every request for up to a second).
        await tokens.load_in_background(TOKENIZER_WAIT_S)
        quality = config.policy.quality
        if store is None:
            built = await build_store(config)
            closers.append(built.close)
            store, probes = built.windows, probes if probes is not None else built.probes
        if probes is None:
            probes = ProbeWindows(quality.window)
        metrics = metrics or Metrics()
        observer = RequestObserver(metrics, {t.name: i for i, t in enumerate(config.tiers)}, tokens,
                                   include_prompts=config.logging.include_prompts,
                                   rates=SavingsRates(config.tiers, config.policy.max_workloads))
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
        prober = Prober(quality_policy, tiers, quality.probe_rate, quality.similarity, metrics, rates=observer.rates)
        closers.append(prober.aclose)
        policies: dict[str, ThresholdPolicy] = {
            "recserve": RecServePolicy(store, layer.beta_for, config.policy.recserve.window),
            "casserve": CasServePolicy(layer.threshold_for),
            "quality": quality_policy,
        }
        if workloads is None:
            workloads = WorkloadRegistry(config.policy.max_workloads, config.policy.workload_idle_s)
        runtime = cls(config, tiers, policies, store, tokens, Tenants.of(config.auth, config.windows.namespace),
                      observer, layer, prober, probes, workloads, config.auth.workloads_by_key(), closers)
        for name in workloads.resize(config.policy.max_workloads, config.policy.workload_idle_s):
            runtime._forget(name)
        return runtime

    def workload(self, task: Task, requested: str | None, client_key: str | None,
                 labels: Sequence[str] | None, structured: bool = False, tenant: str = "") -> Workload:
        """The request's workload (see gateway.cascade.workloads): named, the client key's default, or derived;
        `tenant`'s own unless declared shared; one of at most `policy.max_workloads` kept apart, else the
        tenant's overflow."""
        name = requested or (self.workload_by_key.get(client_key) if client_key else None) \
            or derived_workload(task, labels, structured)
        owner = "" if name in self.config.policy.shared_workloads else self.tenants.scope_of(tenant)
        admitted, evicted = self.workloads.admit(Workload(name, owner))
        if evicted is not None:
            self._forget(evicted)
        return admitted

    def scope(self, task: Task, workload: Workload, prefix_tokens: int = 0) -> Scope:
        """The scope a request is decided in: per workload, or per task alone (`policy.key: task`); the
        workload's tenant either way."""
        name = workload.name if self.config.policy.key == "workload" else ""
        return Scope(task, name, prefix_tokens, workload.tenant)

    def window_scopes(self, workloads: Iterable[Workload] | None = None) -> list[Scope]:
        """The scopes windows may be kept for, one per name: each task, alone and per workload in
        `workloads` (by default the ones this replica keeps apart, and each of their tenants' tasks),
        for whole answers and, with early-commit streaming, for the judged prefix."""
        if workloads is None:
            # A workload named after a task is that task's own (an unnamed request's): "" covers it.
            by_task = self.config.policy.key == "task"
            kept = self.workloads.kept()
            workloads = list(dict.fromkeys([Workload(""), *(Workload("", w.tenant) for w in kept),
                                            *(w for w in kept if not by_task and w.name not in TASKS)]))
        streaming = self.config.streaming
        prefixes = (0, streaming.decide_after_tokens) if streaming.mode == "early" else (0,)
        scopes: dict[str, Scope] = {}
        for workload in workloads:
            for task in TASKS:
                for prefix in prefixes:
                    scope = Scope(task, workload.name, prefix, workload.tenant)
                    scopes.setdefault(scope.name, scope)
        return list(scopes.values())

    def window_namespaces(self) -> list[str]:
        """Every namespace a policy keeps sliding windows under in the window store."""
        return list(dict.fromkeys(ns for policy in self.policies.values() for ns in policy.window_namespaces))

    def learners(self) -> list[Learning]:
        """The probe hooks of every policy that learns from probes."""
        return [learning for policy in self.policies.values() if (learning := self.learning(policy)) is not None]

    def _forget(self, workload: Workload) -> None:
        """Drop an evicted workload's windows and probe windows (in the background: the store may be
        remote), so that what the stores hold stays bounded with the names kept apart."""
        windows = self.window_namespaces()
        probed = [learning.probe_namespace for learning in self.learners()]
        scopes = self.window_scopes([workload])
        keys = [scope.key(namespace, tier.config.name) for namespace in dict.fromkeys([*windows, *probed])
                for tier in self.tiers[:-1]  # the last keeps no window
                for scope in scopes]

        async def forget() -> None:
            for key in keys:
                try:
                    if key.policy in windows:
                        await self.store.reset(key)
                    if key.policy in probed and self.probes.count(key):
                        await self.probes.reset(key)
                except Exception:  # a store outage: the keys stay; bounded all the same by the idle rule
                    return

        task = asyncio.get_running_loop().create_task(forget())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def settle(self, timeout_s: float) -> None:
        """Wait (bounded) for evicted workloads' windows to be dropped."""
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=timeout_s)

    async def aclose(self) -> None:
        await self.settle(1.0)
        for close in reversed(self._closers):
            await close()

    def model_ids(self) -> list[str]:
        return model_ids(self.config)

    def tokenizer(self, tier: Tier) -> TierTokenizer | None:
        """The client that counts prompt tokens with `tier`'s own tokenizer (an OpenAI-compatible tier's),
        made on first use and closed with the runtime; None for a litellm tier."""
        if tier.config.provider != "openai":
            return None
        made = self._tokenizers.get(tier.config.name)
        if made is None:
            made = self._tokenizers[tier.config.name] = TierTokenizer(tier.config)
            self._closers.append(made.aclose)
        return made

    def learning(self, policy: ThresholdPolicy | None) -> Learning | None:
        """`policy`'s probe hooks when it learns from probes (it is the policy the prober teaches), else None."""
        learner = self.prober.policy
        return learner if policy is learner else None

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
