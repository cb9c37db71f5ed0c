"""The config.yaml contract: its pydantic models, their defaults and the checks across sections."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.config.base import POLICY_NAMES, RESERVED_TIER_NAMES, Fraction, Probability, _Strict
from gateway.config.tiers import LocalTierConfig, TierConfig, TierLimits, TierPrice
from gateway.protocol import WORKLOAD_NAME_PATTERN

__all__ = [
    "POLICY_NAMES",
    "RESERVED_TIER_NAMES",
    "Fraction",
    "LocalTierConfig",
    "Probability",
    "TierConfig",
    "TierLimits",
    "TierPrice",
]


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_hops: int = Field(4, ge=1, le=32)
    request_timeout_s: float = Field(120.0, gt=0)
    max_json_depth: int = Field(64, ge=4, le=1000)
    # Names this gateway in `x-recserve-via` so a chain that loops back is refused (508). Give all
    # replicas of one deployment the same id; unset → a random id per process.
    instance_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    # Server-side limits against slow or greedy clients (passed to uvicorn by `recserve serve`).
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # all request headers together; over it → 431
    timeout_keep_alive_s: int = Field(5, ge=1)  # idle keep-alive connections are closed after this
    limit_concurrency: int | None = Field(None, ge=1)  # connections+tasks before uvicorn answers 503
    # Processes serving the one port (`recserve serve --workers` overrides it). More than one needs
    # shared windows (windows.store: redis) unless windows.per_worker says each may keep its own.
    workers: int = Field(1, ge=1, le=64)


class RateLimitConfig(_Strict):
    """Token bucket per client key (gateway/server/ratelimit.py): `burst` tokens, refilled at rpm/60 per second."""

    requests_per_minute: float = Field(gt=0)
    burst: int | None = Field(None, ge=1)  # unset → one minute's worth (at least 1)

    @property
    def rate_per_second(self) -> float:
        return self.requests_per_minute / 60.0

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.requests_per_minute))


# A configured tenant's name: in admin output and metric labels, so short and label-safe. `key-` starts
# the names of single-key tenants (gateway/config/tenants.py) and `open` names an open gateway's one tenant.
TENANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TenantConfig(_Strict):
    """A group of client keys that is one tenant: what one key stores or teaches, the others see."""

    keys_env: str = Field(min_length=1)  # environment variable with the group's comma-separated keys


class AuthConfig(_Strict):
    api_keys_env: str | None = "RECSERVE_API_KEYS"
    admin_key_env: str | None = "RECSERVE_ADMIN_KEY"
    rate_limit: RateLimitConfig | None = None  # off unless set
    # {tenant name: its keys}; every key in api_keys_env and not in a group is a tenant of its own.
    tenants: dict[Annotated[str, Field(pattern=TENANT_NAME_PATTERN)], TenantConfig] = Field(default_factory=dict)
    # The workload of a client key's requests that name none: {ENV_VAR_HOLDING_THE_KEY: workload}.
    workloads_by_key_env: dict[str, Annotated[str, Field(pattern=WORKLOAD_NAME_PATTERN)]] = Field(
        default_factory=dict)

    def workloads_by_key(self) -> dict[str, str]:
        """{client key: workload} for the keys whose variables are set."""
        found = {}
        for env, workload in self.workloads_by_key_env.items():
            key = os.environ.get(env, "").strip()
            if key:
                found[key] = workload
        return found

    def client_keys(self) -> tuple[str, ...]:
        """The keys of `api_keys_env` (each its own tenant unless a group lists it too)."""
        return _keys_in(self.api_keys_env)

    def tenant_keys(self) -> dict[str, tuple[str, ...]]:
        """{tenant name: its keys} for the configured groups (a group whose variable is unset has none)."""
        return {name: _keys_in(tenant.keys_env) for name, tenant in self.tenants.items()}

    @model_validator(mode="after")
    def _one_tenant_per_key(self) -> AuthConfig:
        for name in self.tenants:
            if name == "open" or name.startswith("key-"):
                raise ValueError(f"auth.tenants.{name}: `open` and names starting `key-` are the gateway's own "
                                 "(an open gateway's tenant, a single key's)")
        # Checked where the keys are read; the error names the variables, never a key.
        owners: dict[str, str] = {}
        for name, keys in self.tenant_keys().items():
            for key in keys:
                other = owners.setdefault(key, name)
                if other != name:
                    raise ValueError(f"auth.tenants: a key in {self.tenants[name].keys_env} is also a key of "
                                     f"tenant '{other}' ({self.tenants[other].keys_env}); a key belongs to one tenant")
        return self


def _keys_in(env: str | None) -> tuple[str, ...]:
    """Comma-separated keys from the environment variable `env`; none when it is unset or empty."""
    raw = os.environ.get(env, "") if env else ""
    return tuple(k.strip() for k in raw.split(",") if k.strip())


class RecServePolicyConfig(_Strict):
    beta: Fraction | dict[str, Fraction] = 0.3
    window: int = Field(10000, ge=1, le=1_000_000)


class CasServePolicyConfig(_Strict):
    thresholds: dict[str, Probability] = Field(default_factory=dict)
    default_threshold: Probability = 0.8


class QualityPolicyConfig(_Strict):
    """`recserve/quality`: the window rule plus a quality floor learned from probes."""

    probe_rate: Probability = 0.05  # share of kept (or bypassed) answers also asked of the top tier
    target: Probability = 0.9  # required estimated agreement with the top tier
    min_probes: int = Field(20, ge=1)  # below this many probes per tier and task, the plain rule decides
    window: int = Field(200, ge=1)  # probes remembered per tier and task
    similarity: Probability = 0.5  # generation: token-F1 at or above this counts as agreement
    # Below this many probes per tier and task (in the probe store, shared by replicas) every kept or
    # bypassed answer is probed, then probe_rate applies; 0: off. Unset or null: min_probes (at most window).
    warmup_probes: int = Field(20, ge=0, strict=True)
    # While warming up, "top": a kept answer is checked against the top tier first and the top tier's
    # answer served (no unjudged answer reaches a client; those requests wait for both tiers);
    # "kept": the kept answer is served and probed in the background.
    warmup_answer: Literal["top", "kept"] = "top"
    # One-sided confidence with which a kept answer's agreement with the top tier reaches `target`
    # (the floor uses a lower confidence bound of the agreement, not its point estimate).
    confidence_level: float = Field(0.9, ge=0.5, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _warmup_defaults_to_min_probes(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("warmup_probes") is None:
            min_probes = data.get("min_probes", cls.model_fields["min_probes"].default)
            window = data.get("window", cls.model_fields["window"].default)
            if type(min_probes) is int and type(window) is int:  # else their own errors say why
                data = {**data, "warmup_probes": min(min_probes, window)}
        return data


class PolicyConfig(_Strict):
    default: str = "recserve"
    recserve: RecServePolicyConfig = RecServePolicyConfig()
    casserve: CasServePolicyConfig = CasServePolicyConfig()
    quality: QualityPolicyConfig = QualityPolicyConfig()
    tool_requests: str | None = None
    # What windows, probe windows and competence are kept per: `workload` (and task), or `task` alone
    # as in the paper.
    key: Literal["workload", "task"] = "workload"
    max_workloads: int = Field(100, ge=1, le=100_000)  # names kept apart; beyond, new ones share "other"
    workload_idle_s: float = Field(600.0, ge=0)  # a kept name unused this long may give way to a new one
    # Workloads every tenant decides in together (one set of windows, probes and competence for all);
    # any other workload is kept per tenant.
    shared_workloads: list[Annotated[str, Field(pattern=WORKLOAD_NAME_PATTERN)]] = Field(default_factory=list)


class ConfidenceConfig(_Strict):
    top_logprobs: int = Field(5, ge=1, le=20)


class WindowsConfig(_Strict):
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Name of an env var holding the URL, so a password need not sit in config.yaml (or a ConfigMap).
    redis_url_env: str | None = None
    namespace: str = Field("recserve", min_length=1)
    # exact: every decision steps the shared window (one Redis call); batched: decide on a local
    # view and flush to the shared window every flush_ms (no Redis call on the request path); auto:
    # each window batched while this replica steps it at least hot_steps_per_flush times per flush_ms.
    sync: Literal["exact", "batched", "auto"] = "exact"
    flush_ms: float = Field(20.0, gt=0, le=10_000)
    hot_steps_per_flush: float = Field(2.0, gt=0)
    # batched only: at most this many values per second and window go from one replica to the shared
    # window (the hotter ones are sampled; 0: no cap); every request still decides against the window.
    max_sent_per_s: float = Field(0.0, ge=0)
    # With store: memory and several workers, each worker keeps (and decides on) its own windows.
    per_worker: bool = False

    @model_validator(mode="before")
    @classmethod
    def _url_from_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("redis_url_env"):
            url = os.environ.get(str(data["redis_url_env"]))
            if not url:
                raise ValueError(f"redis_url_env: environment variable {data['redis_url_env']} is not set")
            data = {**data, "redis_url": url}
        return data

    @model_validator(mode="after")
    def _sampling_needs_batched(self) -> WindowsConfig:
        if self.max_sent_per_s and (self.store != "redis" or self.sync == "exact"):
            raise ValueError("windows.max_sent_per_s needs windows.store: redis and windows.sync: batched or auto "
                             "(it caps what each flush sends to the shared window)")
        return self


class ConversationsConfig(_Strict):
    """Stored Responses API answers (`previous_response_id`), kept in the windows' store."""

    ttl_s: float = Field(30 * 24 * 3600.0, gt=0)  # OpenAI keeps stored responses for 30 days
    max_entries: int = Field(10000, ge=1)  # the memory store only: beyond it the oldest go first


class StreamingConfig(_Strict):
    mode: Literal["buffered", "early"] = "buffered"
    decide_after_tokens: int = Field(8, ge=1)


class LoggingConfig(_Strict):
    """Structured JSON access log (logger `recserve.access`); prompts stay out unless asked for."""

    access_log: bool = True
    include_prompts: bool = False


class TracingConfig(_Strict):
    """OpenTelemetry traces (gateway/telemetry/tracing.py), read once at start. The standard OTEL_*
    environment variables take precedence over these keys, as with any instrumented service."""

    exporter: Literal["none", "otlp", "console"] = "none"
    endpoint: str | None = Field(None, pattern=r"^https?://[^\s]+$")  # the collector's OTLP/HTTP base URL
    service_name: str = Field("recserve", min_length=1, max_length=128)


class GatewayConfig(_Strict):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    tiers: list[TierConfig] = Field(min_length=1)
    policy: PolicyConfig = PolicyConfig()
    confidence: ConfidenceConfig = ConfidenceConfig()
    windows: WindowsConfig = WindowsConfig()
    streaming: StreamingConfig = StreamingConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig = TracingConfig()
    conversations: ConversationsConfig = ConversationsConfig()
    embeddings_tier: str | None = None

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        names = [t.name for t in self.tiers]
        errors: list[str] = []
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                errors.append(f"tiers.{i}.name: duplicate tier name '{name}'")
            seen.add(name)
        if self.policy.default not in (*POLICY_NAMES, *names):
            errors.append(
                f"policy.default: '{self.policy.default}' is neither a policy "
                f"({', '.join(POLICY_NAMES)}) nor a tier ({', '.join(names)})"
            )
        beta = self.policy.recserve.beta
        if isinstance(beta, dict):
            errors += _unknown_tiers("policy.recserve.beta", beta, seen)
            errors += [
                f"policy.recserve.beta.{n}: missing (every tier but the last needs a beta)"
                for n in names[:-1]
                if n not in beta
            ]
        errors += _unknown_tiers("policy.casserve.thresholds", self.policy.casserve.thresholds, seen)
        quality = self.policy.quality
        if quality.warmup_probes > quality.window:
            errors.append(f"policy.quality.warmup_probes: {quality.warmup_probes} is more than policy.quality.window "
                          f"({quality.window}), the most probes a tier and task holds: the warm-up would never end")
        for key in ("tool_requests",):
            value = getattr(self.policy, key)
            if value is not None and value not in seen:
                errors.append(f"policy.{key}: unknown tier '{value}'")
        if self.embeddings_tier is not None and self.embeddings_tier not in seen:
            errors.append(f"embeddings_tier: unknown tier '{self.embeddings_tier}'")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def beta_for(self, tier: str) -> float:
        beta = self.policy.recserve.beta
        return beta[tier] if isinstance(beta, dict) else beta

    def threshold_for(self, tier: str) -> float:
        cas = self.policy.casserve
        return cas.thresholds.get(tier, cas.default_threshold)


def _unknown_tiers(path: str, mapping: dict[str, Any], known: set[str]) -> list[str]:
    return [f"{path}.{k}: unknown tier '{k}'" for k in mapping if k not in known]
