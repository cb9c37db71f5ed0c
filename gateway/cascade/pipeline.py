"""One validated chat-shaped request through the cascade, whichever API it arrived by.

Chat and legacy completions call `serve` with the client's own body; the Responses and Anthropic
Messages routes translate theirs into a chat body first and translate the answer back. Everything
that decides (routing, task, streaming mode, the cascade, quality probes, observation) happens here
once, so the APIs cannot drift apart in how they are served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.cascade.climb import (
    CascadeFailed,
    CascadeRequest,
    CascadeResult,
    TierCall,
    render_path,
    run_cascade,
    send_call,
)
from gateway.cascade.runtime import Runtime
from gateway.cascade.shaping import (
    HOPS_HEADER,
    TASK_HEADER,
    VIA_HEADER,
    forward_body,
    resolve_task,
    result_headers,
    result_summary,
)
from gateway.cascade.streaming import StreamPlan, buffered_call, early_call, stream_body
from gateway.cascade.workloads import WORKLOAD_HEADER, valid_name
from gateway.config.schema import WORKLOAD_NAME_PATTERN
from gateway.errors import (
    InvalidRequest,
    LoopDetected,
    UpstreamFailed,
    UpstreamTimeout,
    from_error_detail,
    from_validation_error,
)
from gateway.protocol import ChatCompletionRequest, CompletionRequest, Route
from gateway.server.intake import read_json_body
from gateway.upstream.backends import LOOP_STATUS, TierRejected
from policies.base import Task

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Admission:
    """A request that passed the door: its id, when it started, and the gateway chain it came by."""

    request_id: str
    started: float  # time.monotonic(); the cascade's deadline counts from here
    hops: int
    via: list[str]


@dataclass(frozen=True, slots=True)
class Served:
    """The cascade's answer to one request, ready to be rendered by the API that asked."""

    result: CascadeResult
    headers: dict[str, str]  # x-recserve-* and x-request-id
    task: Task
    labels: Sequence[str] | None
    cascade_request: CascadeRequest
    observe: Callable[[Mapping[str, Any] | None], None]  # a stream calls it at its end, with the usage
    probes: Callable[[Mapping[str, Any]], None] | None  # quality probes of a streamed answer, once whole

    def summary(self) -> dict[str, Any]:
        """The decision as data (the `recserve` field of an answer or of a stream's last event)."""
        return result_summary(self.result, self.task)

    def stream_plan(self, route: Route, raw: Mapping[str, Any]) -> StreamPlan:
        return StreamPlan(self.result, route, raw, self.task, self.labels, self.summary(),
                          self.cascade_request.count_prompt_tokens, self.observe, self.probes)


async def read_body(request: Request, runtime: Runtime, schema: type[Model],
                    branch_tags: frozenset[str] = frozenset()) -> tuple[dict[str, Any], Model]:
    """The body as the raw dict we forward, and as the validated model we reason about."""
    server = runtime.config.server
    raw = await read_json_body(request, server.max_body_bytes, server.max_json_depth)
    return raw, validate(schema, raw, branch_tags)


def validate(schema: type[Model], raw: Mapping[str, Any], branch_tags: frozenset[str] = frozenset()) -> Model:
    """`raw` as `schema`, or OpenAI's 400 naming the offending param.

    With `branch_tags` (the tags of a schema's tagged unions), the error reported is the one from
    the deepest branch tried, named without the tags: `input[0].role`, not `input.str`.
    """
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        if not branch_tags:
            raise from_validation_error(exc) from None
        deepest = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
        loc = deepest["loc"]
        # A tag is followed by the fields of its branch; a tag name that ends the path is a field.
        deepest["loc"] = tuple(p for i, p in enumerate(loc) if p not in branch_tags or i == len(loc) - 1)
        raise from_error_detail(deepest) from None


def requested_workload(request: Request, parsed: ChatCompletionRequest | CompletionRequest) -> str | None:
    """The workload the request names: the extension first, then the header; None when it names none."""
    if parsed.recserve is not None and parsed.recserve.workload is not None:
        return parsed.recserve.workload
    header = request.headers.get(WORKLOAD_HEADER)
    if header is None:
        return None
    if not valid_name(header):
        raise InvalidRequest(f"Header {WORKLOAD_HEADER} must match {WORKLOAD_NAME_PATTERN}.", param=WORKLOAD_HEADER,
                             code="invalid_header")
    return header


def presented_key(request: Request) -> str | None:
    """The client key the request presented (bearer, or Anthropic's x-api-key), for its default workload."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.headers.get("x-api-key") or None


async def serve(request: Request, runtime: Runtime, admission: Admission, route: Route, raw: dict[str, Any],
                parsed: ChatCompletionRequest | CompletionRequest) -> Served:
    """Run the cascade for `raw` (already validated as `parsed`); raises GatewayError subclasses.

    A non-streamed answer is observed here; a stream is observed by whoever renders it, at its end.
    """
    selected = runtime.resolve(parsed.model, uses_tools=bool(raw.get("tools")))
    task = resolve_task(parsed, request.headers.get(TASK_HEADER))
    labels = parsed.recserve.labels if parsed.recserve else None
    body = forward_body(raw, route, runtime.config.confidence.top_logprobs)
    call: TierCall = send_call
    prefix_tokens = 0
    if parsed.stream:
        body = stream_body(body)
        streaming = runtime.config.streaming
        if streaming.mode == "early":
            call, prefix_tokens = early_call(streaming.decide_after_tokens), streaming.decide_after_tokens
        else:
            call = buffered_call
    workload = runtime.workload(task, requested_workload(request, parsed), presented_key(request), labels)
    scope = runtime.scope(task, workload, prefix_tokens)
    cascade_request = CascadeRequest(
        route=route, body=body, scope=scope, labels=labels,
        deadline=admission.started + runtime.config.server.request_timeout_s,
        forward_headers={HOPS_HEADER: str(admission.hops + 1), VIA_HEADER: ",".join(admission.via),
                         "x-request-id": admission.request_id},
        count_prompt_tokens=lambda: runtime.tokens.count(body),
        workload=workload,
    )
    try:
        result = await run_cascade(cascade_request, selected.tiers, selected.policy, call)
    except CascadeFailed as failed:
        runtime.observer.request_done(request, selected.policy.name, task, body, hops=failed.hops,
                                      workload=workload)
        error_type = UpstreamTimeout if failed.timed_out else UpstreamFailed
        raise error_type(str(failed), headers={"x-recserve-path": render_path(failed.hops),
                                                "x-recserve-task": task}) from None
    except TierRejected as rejected:
        where = {"x-recserve-path": rejected.path, "x-recserve-task": task}
        if rejected.status == LOOP_STATUS:
            raise LoopDetected(rejected.message, code=rejected.code or "loop_detected", headers=where) from None
        raise InvalidRequest(rejected.message, param=rejected.param, code=rejected.code, headers=where) from None
    headers = result_headers(result, task, admission.request_id)
    headers[WORKLOAD_HEADER] = workload

    def observe(usage: Mapping[str, Any] | None = None) -> None:
        runtime.observer.request_done(request, selected.policy.name, task, body, result, usage=usage,
                                      workload=workload)

    if not parsed.stream:
        observe()  # a stream is observed at its end, when its usage is known: no tokenizing before the first byte
    probes = None  # a streamed answer is probed once the client has all of it
    learning = runtime.learning(selected.policy)
    if learning is not None:
        probes = runtime.prober.after(cascade_request, result)
        estimate = learning.estimate(result.tier.name, scope, result.confidence or 0.0)
        headers["x-recserve-quality-estimate"] = "none" if estimate is None else repr(estimate)
    return Served(result, headers, task, labels, cascade_request, observe, probes)
