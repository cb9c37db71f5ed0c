"""The config.yaml contract: its pydantic models, their defaults and the checks across sections."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.protocol import WORKLOAD_NAME_PATTERN

RESERVED_TIER_NAMES = frozenset({"recserve", "casserve", "quality"})
POLICY_NAMES = ("recserve", "casserve", "quality")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key is an error with its path, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class AuthConfig(_Strict):
    api_keys_env: str | None = "RECSERVE_API_KEYS"
    admin_key_env: str | None = "RECSERVE_ADMIN_KEY"
    rate_limit: RateLimitConfig | None = None  # off unless set
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
        """Client keys from the environment; empty means the gateway is open."""
        raw = os.environ.get(self.api_keys_env or "", "") if self.api_keys_env else ""
        return tuple(k.strip() for k in raw.split(",") if k.strip())


class LocalTierConfig(_Strict):
    """A tier this machine runs itself with llama.cpp (`recserve tiers up`)."""

    model: str
    port: int = Field(ge=1, le=65535)
    # Unset: `tiers up` derives threads, CPU affinity and polling from the cores it may use
    # (gateway.local.placement); set: exactly this many threads, not pinned.
    threads: int | None = Field(None, ge=1, le=256)
    ctx_size: int = Field(2048, ge=256)
    parallel: int = Field(1, ge=1, le=64)
    # --no-cache-prompt: the same prompt always gets the same logprobs (so decisions replay exactly);
    # false keeps llama.cpp's prompt cache: a repeated prompt's TTFT drops (~310 → ~29 ms on the device).
    deterministic: bool = True


class TierLimits(_Strict):
    """Bounds on what a tier may send back. A tier crossing one gets a fault of kind `limit`: a lower
    tier escalates, the last tier is a 502 (or a streamed answer's error event)."""

    max_header_bytes: int = Field(64 * 1024, ge=1024)  # the response's whole header section
    max_headers: int = Field(128, ge=8)
    # A whole answer, and a stream while the gateway buffers it to judge it: on the wire and again
    # after gzip/deflate inflation. A stream being served live is bounded in time instead.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    max_sse_line_bytes: int = Field(1024 * 1024, ge=4096)  # one line of a server-sent event stream
    # JSON objects and arrays in a whole answer, and in a stream while it is buffered: counted before
    # parsing, since each costs event-loop time however small. One per 16 bytes of max_body_bytes: an
    # honest answer (logprobs with 20 alternatives per token) needs one per 20-30 bytes.
    max_json_containers: int = Field(500_000, ge=1000)


class TierPrice(_Strict):
    """What a tier charges, in USD per million tokens (for the savings the gateway reports)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class TierConfig(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base_url: str
    model: str = Field(min_length=1)
    provider: Literal["openai", "litellm"] = "openai"
    api_key_env: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(64, ge=1)
    queue_timeout_s: float = Field(0.5, ge=0)
    min_budget_s: float = Field(0.0, ge=0)
    limits: TierLimits = TierLimits()
    # The tier is another RecServe gateway: its x-recserve-path and x-recserve-uplink-tokens are
    # read (validated and capped). Any other tier's x-recserve-* headers are ignored.
    recserve_gateway: bool = False
    local: LocalTierConfig | None = None
    price: TierPrice | None = None  # unset: the tier costs nothing (e.g. it runs on the user's own machine)
    uplink_weight: float = Field(1.0, ge=0)  # the cost of shipping one prompt token to this tier
    # How tool requests reach the tier: `native` passes `tools` through; `constrained` adds a JSON Schema
    # built from the tools as `response_format` and turns the JSON answer back into `tool_calls`.
    tool_mode: Literal["native", "constrained"] = "native"
    # Under `constrained`, how calls are written: always a list, or one call unless several are needed.
    tool_call_form: Literal["list", "call_or_list"] = "list"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TIER_NAMES:
            raise ValueError(f"'{value}' is reserved for a policy name")
        return value

    @model_validator(mode="after")
    def _call_form_needs_constrained(self) -> TierConfig:
        if "tool_call_form" in self.model_fields_set and self.tool_mode != "constrained":
            raise ValueError("tool_call_form applies only to tool_mode: constrained")
        return self

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def served_model(self) -> str:
        """The model name clients see: litellm's provider prefix ("anthropic/") is routing, not a name."""
        return self.model.split("/", 1)[-1] if self.provider == "litellm" else self.model


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


class GatewayConfig(_Strict):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    tiers: list[TierConfig] = Field(min_length=1)
    policy: PolicyConfig = PolicyConfig()
    confidence: ConfidenceConfig = ConfidenceConfig()
    windows: WindowsConfig = WindowsConfig()
    streaming: StreamingConfig = StreamingConfig()
    logging: LoggingConfig = LoggingConfig()
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
