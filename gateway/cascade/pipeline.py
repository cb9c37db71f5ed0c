"""One validated request through the cascade, whichever API it arrived by.

Chat and legacy completions call `serve` with the client's own body; the Responses and Anthropic
Messages APIs translate theirs into a chat body first and render the answer back. Everything that
decides happens here once, in named steps (the way httpx's `Client.send` hands off):

    route the model → judge the task → choose how tiers are called → place the workload →
    frame the cascade request → climb → report the decision (headers, observation, quality)

so the APIs cannot drift apart in how they are served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway.cascade.climb import (
    AttemptWatch,
    CascadeFailed,
    CascadeRequest,
    CascadeResult,
    TierCall,
    render_path,
    reported_tokens,
    run_cascade,
    send_call,
)
from gateway.cascade.forwarding import forward_body, resolve_task, trace_context
from gateway.cascade.runtime import ModelBinding, Runtime
from gateway.cascade.streaming import buffered_call, early_call, stream_body
from gateway.cascade.workloads import Workload, valid_name
from gateway.errors import InvalidRequest, LoopDetected, UpstreamFailed, UpstreamTimeout
from gateway.protocol import (
    HOPS_HEADER,
    TASK_HEADER,
    VIA_HEADER,
    WORKLOAD_HEADER,
    WORKLOAD_NAME_PATTERN,
    Admission,
    CascadeAsk,
    Route,
)
from gateway.telemetry.tokens import PromptTokens
from gateway.telemetry.tracing import request_trace
from gateway.upstream.backends import LOOP_STATUS, TierRejected
from policies.base import Task
from policies.structure import Expectation, expectation_of


@dataclass(frozen=True, slots=True)
class Served:
    """The cascade's answer to one request, ready to be rendered by the API that asked."""

    result: CascadeResult
    headers: dict[str, str]  # x-recserve-* and x-request-id
    task: Task
    labels: Sequence[str] | None
    cascade_request: CascadeRequest
    # A stream calls it at its end, with the usage and the served answer's structure problem, if any.
    observe: Callable[[Mapping[str, Any] | None, str | None], None]
    probes: Callable[[Mapping[str, Any]], None] | None  # quality probes of a streamed answer, once whole

    def summary(self) -> dict[str, Any]:
        """The decision as data (the `recserve` field of an answer or of a stream's last event)."""
        return result_summary(self.result, self.task)


async def serve(request: Request, runtime: Runtime, admission: Admission, route: Route, body: Mapping[str, Any],
                ask: CascadeAsk) -> Served:
    """Run the cascade for `body` (the chat or completion body tiers are asked with, already validated
    as `ask`); raises GatewayError subclasses.

    A non-streamed answer is observed here; a stream is observed by whoever renders it, at its end.
    """
    uses_tools = bool(body.get("tools"))
    binding = runtime.resolve(ask.model, uses_tools=uses_tools)
    task = resolve_task(ask, request.headers.get(TASK_HEADER), uses_tools)
    labels = ask.recserve.labels if ask.recserve else None
    forwarded = forward_body(body, route, runtime.config.confidence.top_logprobs)
    call: TierCall = send_call
    prefix_tokens = 0
    if ask.stream:
        forwarded = stream_body(forwarded)
        call, prefix_tokens = _stream_call(runtime)
    # Tools or a response format: answers are checked for structure before confidence (chat only), and
    # judged by the tokens of their JSON values.
    expectation = expectation_of(body, runtime.validators) if route == "chat/completions" else None
    workload = runtime.workload(task, requested_workload(request, ask), admission.client_key, labels,
                                structured=expectation is not None, tenant=admission.tenant)
    watch = _watch(request, runtime, admission, binding, ask.model, route, task, workload.name)
    cascade_request = _cascade_request(request, runtime, admission, route, forwarded, task, labels, workload,
                                       prefix_tokens, expectation, watch)
    result = await _climb(request, runtime, binding, cascade_request, call)
    if not ask.stream and reported_tokens(result.reply.body, "prompt_tokens") is None:
        await cascade_request.prompt_tokens.count()  # the observer and the API's usage read it next
    return _report(request, runtime, binding, admission, cascade_request, result, labels, ask.stream)


def _stream_call(runtime: Runtime) -> tuple[TierCall, int]:
    """How a streamed request asks its tiers: whole streams (`buffered`), or `early` commit after k tokens."""
    streaming = runtime.config.streaming
    if streaming.mode == "early":
        return early_call(streaming.decide_after_tokens), streaming.decide_after_tokens
    return buffered_call, 0


def requested_workload(request: Request, ask: CascadeAsk) -> str | None:
    """The workload the request names: the extension first, then the header; None when it names none."""
    if ask.recserve is not None and ask.recserve.workload is not None:
        return ask.recserve.workload
    header = request.headers.get(WORKLOAD_HEADER)
    if header is None:
        return None
    if not valid_name(header):
        raise InvalidRequest(f"Header {WORKLOAD_HEADER} must match {WORKLOAD_NAME_PATTERN}.", param=WORKLOAD_HEADER,
                             code="invalid_header")
    return header


def _watch(request: Request, runtime: Runtime, admission: Admission, binding: ModelBinding, model: str, route: Route,
           task: Task, workload: str) -> AttemptWatch | None:
    """Who sees this request's tier attempts: its trace, when tracing is on (else None: nothing to do)."""
    trace = request_trace(request.scope.get("state", {}))
    if trace is None:
        return None
    return trace.cascade(route=route, model=model, policy=binding.policy.name, task=task, workload=workload,
                         tenant=admission.tenant, include_prompts=runtime.config.logging.include_prompts)


def _cascade_request(request: Request, runtime: Runtime, admission: Admission, route: Route, body: dict[str, Any],
                     task: Task, labels: Sequence[str] | None, workload: Workload, prefix_tokens: int,
                     expectation: Expectation | None, watch: AttemptWatch | None) -> CascadeRequest:
    forward_headers = {HOPS_HEADER: str(admission.hops + 1), VIA_HEADER: ",".join(admission.via),
                       "x-request-id": admission.request_id}
    traceparent = request.headers.get("traceparent")
    if traceparent is not None:
        forward_headers.update(trace_context(traceparent, request.headers.get("tracestate")))
    return CascadeRequest(
        route=route, body=body, scope=runtime.scope(task, workload, prefix_tokens), labels=labels,
        deadline=admission.started + runtime.config.server.request_timeout_s,
        forward_headers=forward_headers,
        prompt_tokens=PromptTokens(runtime.tokens.count, body),
        workload=workload.name,
        tenant=admission.tenant,
        expectation=expectation,
        watch=watch,
    )


async def _climb(request: Request, runtime: Runtime, binding: ModelBinding, cascade_request: CascadeRequest,
                 call: TierCall) -> CascadeResult:
    """The cascade itself; a request no tier could answer is observed and leaves as the client's error."""
    task = cascade_request.task
    try:
        return await run_cascade(cascade_request, binding.tiers, binding.policy, call)
    except CascadeFailed as failed:
        await cascade_request.prompt_tokens.count()  # no tier reported usage: the observer books our count
        runtime.observer.request_done(request, binding.policy.name, task, cascade_request.body, hops=failed.hops,
                                      workload=cascade_request.workload, tenant=cascade_request.tenant,
                                      count_prompt=cascade_request.prompt_tokens)
        error_type = UpstreamTimeout if failed.timed_out else UpstreamFailed
        raise error_type(str(failed), headers={"x-recserve-path": render_path(failed.hops),
                                                "x-recserve-task": task}) from None
    except TierRejected as rejected:
        where = {"x-recserve-path": rejected.path, "x-recserve-task": task}
        if rejected.status == LOOP_STATUS:
            raise LoopDetected(rejected.message, code=rejected.code or "loop_detected", headers=where) from None
        raise InvalidRequest(rejected.message, param=rejected.param, code=rejected.code, headers=where) from None


def _report(request: Request, runtime: Runtime, binding: ModelBinding, admission: Admission,
            cascade_request: CascadeRequest, result: CascadeResult, labels: Sequence[str] | None,
            streamed: bool) -> Served:
    """The decision as headers, its observation (now, or at a stream's end) and the quality probes."""
    task = cascade_request.task
    headers = result_headers(result, task, admission.request_id)
    headers[WORKLOAD_HEADER] = cascade_request.workload

    def observe(usage: Mapping[str, Any] | None = None, served_invalid: str | None = None) -> None:
        runtime.observer.request_done(request, binding.policy.name, task, cascade_request.body, result, usage=usage,
                                      workload=cascade_request.workload, tenant=cascade_request.tenant,
                                      served_invalid=served_invalid, count_prompt=cascade_request.prompt_tokens)

    if not streamed:
        observe()  # a stream is observed at its end, when its usage is known: no tokenizing before the first byte
    probes = None  # a streamed answer is probed once the client has all of it
    learning = runtime.learning(binding.policy)
    if learning is not None:
        probes = runtime.prober.after(cascade_request, result)
        estimate = learning.estimate(result.tier.name, cascade_request.scope, result.confidence or 0.0)
        headers["x-recserve-quality-estimate"] = "none" if estimate is None else repr(estimate)
    return Served(result, headers, task, labels, cascade_request, observe, probes)


def _number(value: float | None) -> str:
    return "none" if value is None else repr(value)


def result_headers(result: CascadeResult, task: Task, request_id: str) -> dict[str, str]:
    headers = {
        "x-recserve-tier": result.tier.name,
        "x-recserve-path": result.path,
        "x-recserve-confidence": _number(result.confidence),
        "x-recserve-threshold": _number(result.threshold),
        "x-recserve-task": task,
        "x-recserve-uplink-tokens": str(result.uplink_tokens),
        "x-request-id": request_id,
    }
    if result.degraded:
        headers["x-recserve-degraded"] = "true"
    if result.window_fallback:
        headers["x-recserve-window"] = "local"
    return headers


def result_summary(result: CascadeResult, task: Task) -> dict[str, Any]:
    """The decision as data: what a stream's final chunk carries in its `recserve` field."""
    return {"tier": result.tier.name, "path": result.path, "confidence": result.confidence,
            "threshold": result.threshold, "task": task, "uplink_tokens": result.uplink_tokens,
            "degraded": result.degraded, "window": "local" if result.window_fallback else "shared"}
