"""What `/openapi.json` (and so `/docs`) says about the client routes.

The completion-like routes read the raw request themselves (the fast path skips FastAPI's body
parsing), so FastAPI cannot infer their bodies. Each route is described here instead, attached to
its registered FastAPI route as `openapi_extra` and `responses` (documentation only: no effect on
how a request is served): the request body from the gateway's own pydantic models (`recserve`
extension included), the answer, the event stream (one schema per server-sent event), the
`x-recserve-*` headers, and every error status the route can return, in OpenAI's error shape
(Anthropic's under `/v1/messages`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypedDict

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.apis.messages.request import CountTokensRequest, MessagesRequest
from gateway.apis.responses.request import ResponsesRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

Schema = dict[str, Any]
REF: Final = "#/components/schemas/{model}"
MODEL_NAME: Final = "ModelName"
REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = (
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ResponsesRequest, MessagesRequest,
    CountTokensRequest)


class RouteDoc(TypedDict, total=False):
    """Keyword arguments of a FastAPI route decorator that describe it (and do nothing else)."""

    summary: str
    description: str
    responses: dict[int | str, dict[str, Any]]
    openapi_extra: dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


_NULLABLE_STRING: Final[Schema] = {"type": ["string", "null"]}
_OBJECT: Final[Schema] = {"type": "object"}

DECISION: Final[Schema] = {
    "type": "object", "description": "The cascade's decision for this answer (the headers, as data).",
    "required": ["tier", "path", "task"],
    "properties": {
        "tier": {"type": "string"}, "path": {"type": "string"},
        "confidence": {"type": ["number", "null"]}, "threshold": {"type": ["number", "null"]},
        "task": {"type": "string", "enum": ["classification", "generation"]},
        "uplink_tokens": {"type": "integer", "minimum": 0}, "degraded": {"type": "boolean"},
        "window": {"type": "string", "enum": ["shared", "local"]},
    },
}

_CHOICES: Final[Schema] = {"type": "array", "items": {"type": "object", "required": ["index"],
                                                      "properties": {"index": {"type": "integer"}}}}
_USAGE: Final[Schema] = {"type": ["object", "null"], "properties": {
    "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
    "total_tokens": {"type": "integer"}}}

# Answers are documented by the fields a client can rely on; a tier's extra fields pass through.
RESPONSE_SCHEMAS: Final[dict[str, Schema]] = {
    "Decision": DECISION,
    "OpenAIError": {
        "type": "object", "description": "Every error in OpenAI's shape.", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                                 "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                "param": _NULLABLE_STRING, "code": _NULLABLE_STRING}}}},
    "AnthropicError": {
        "type": "object", "description": "An error in Anthropic's shape (every route under `/v1/messages`).",
        "required": ["type", "error"],
        "properties": {"type": {"const": "error"}, "request_id": {"type": "string"},
                       "error": {"type": "object", "required": ["type", "message"],
                                 "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "model", "choices"],
        "properties": {"id": {"type": "string"}, "object": {"const": "chat.completion"},
                       "created": {"type": "integer"}, "model": {"type": "string"},
                       "choices": {**_CHOICES, "minItems": 1}, "usage": _USAGE}},
    "ChatCompletionChunk": {
        "type": "object", "required": ["object", "choices"],
        "description": "One chunk; the last before `[DONE]` has no choices and carries `recserve`.",
        "properties": {"id": {"type": "string"}, "object": {"const": "chat.completion.chunk"},
                       "model": {"type": "string"}, "choices": _CHOICES, "usage": _USAGE,
                       "recserve": ref("Decision")}},
    "Completion": {
        "type": "object", "required": ["id", "object", "model", "choices"],
        "properties": {"id": {"type": "string"}, "object": {"const": "text_completion"},
                       "model": {"type": "string"}, "choices": {**_CHOICES, "minItems": 1}, "usage": _USAGE}},
    "CompletionChunk": {
        "type": "object", "required": ["object", "choices"],
        "properties": {"object": {"const": "text_completion"}, "choices": _CHOICES, "usage": _USAGE,
                       "recserve": ref("Decision")}},
    "EmbeddingList": {
        "type": "object", "required": ["object", "data", "model"],
        "properties": {"object": {"const": "list"}, "model": {"type": "string"},
                       "data": {"type": "array", "items": _OBJECT}, "usage": _USAGE}},
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object"],
            "properties": {"id": ref(MODEL_NAME), "object": {"const": "model"}}}}}},
    "Response": {
        "type": "object", "description": "A Responses API answer; the decision is its `recserve` field.",
        "required": ["id", "object", "status", "output"],
        "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "status": {"type": "string"},
                       "model": {"type": "string"}, "output": {"type": "array", "items": _OBJECT},
                       "usage": {"type": ["object", "null"]}, "recserve": ref("Decision")}},
    "ResponseEvent": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
    "ResponseDeleted": {
        "type": "object", "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}}},
    "Message": {
        "type": "object", "description": "An Anthropic Messages API answer; the decision is its `recserve` field.",
        "required": ["id", "type", "role", "content", "model"],
        "properties": {"id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
                       "content": {"type": "array", "items": _OBJECT}, "model": {"type": "string"},
                       "stop_reason": _NULLABLE_STRING, "stop_sequence": _NULLABLE_STRING, "usage": _OBJECT,
                       "recserve": ref("Decision")}},
    "MessageEvent": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
    "MessageTokensCount": {
        "type": "object", "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
}

_HEADER_TEXT: Final[dict[str, tuple[str, Schema, bool]]] = {
    "x-recserve-tier": ("The tier that served the answer.", {"type": "string"}, True),
    "x-recserve-path": ("Tiers tried, e.g. `device>edge`; `!` marks a tier that gave no answer, `~` one "
                        "bypassed, `?` a warm-up answer verified by the top tier, `[...]` a chained gateway's path.",
                        {"type": "string"}, True),
    "x-recserve-confidence": ("The served answer's confidence, or `none`.", {"type": "string"}, True),
    "x-recserve-threshold": ("The threshold it was judged against, or `none`.", {"type": "string"}, True),
    "x-recserve-task": ("`classification` or `generation`.",
                        {"type": "string", "enum": ["classification", "generation"]}, True),
    "x-recserve-uplink-tokens": ("Prompt tokens shipped to tiers above the first.",
                                 {"type": "string", "pattern": "^[0-9]+$"}, True),
    "x-request-id": ("The client's `x-request-id` if sane, else a new one.", {"type": "string"}, True),
    "x-recserve-degraded": ("`true` when the last tier failed and a lower tier's answer was returned.",
                            {"type": "string", "enum": ["true"]}, False),
    "x-recserve-window": ("`local` when the shared window store was unreachable.",
                          {"type": "string", "enum": ["local"]}, False),
    "x-recserve-quality-estimate": ("`recserve/quality` only: the estimated agreement with the top tier.",
                                    {"type": "string"}, False),
}
DECISION_HEADERS: Final[dict[str, Schema]] = {
    name: {"description": text, "schema": schema, "required": required}
    for name, (text, schema, required) in _HEADER_TEXT.items()}

ERROR_TEXT: Final[dict[int, str]] = {
    400: "Invalid JSON, a schema violation (strict: no coercion), a bad `x-recserve-hops`, or a request a "
         "tier rejected.",
    401: "Missing or wrong client key.",
    404: "Unknown model (`model_not_found`) or object.",
    413: "Body over `server.max_body_bytes`.",
    415: "Content type other than JSON.",
    429: "Rate limit (`auth.rate_limit`); see `retry-after`.",
    431: "Request headers over `server.max_header_bytes`.",
    500: "An unexpected error (a bug; logged with the request id).",
    502: "Every tier failed.",
    503: "Not ready: the gateway is still starting.",
    504: "The deadline (`server.request_timeout_s`) passed with no answer.",
    508: "Hop limit (`server.max_hops`) reached or a loop of chained gateways.",
}
CASCADE_ERRORS: Final = (400, 401, 404, 413, 415, 429, 431, 500, 502, 504, 508)
EMBEDDING_ERRORS: Final = (400, 401, 404, 413, 415, 429, 431, 500, 502)


def _event(data: Schema) -> Schema:
    """One server-sent event as a client parses it: `data` is JSON, or `[DONE]` at the end."""
    payload = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    return {"type": "object", "required": ["data"],
            "properties": {"event": {"type": "string"}, "data": {"anyOf": [{"const": "[DONE]"}, payload]}}}


def _errors(statuses: Iterable[int], shape: str = "OpenAIError") -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        headers = {"x-request-id": {"description": "The request's id, once it has one.", "schema": {"type": "string"},
                                    "required": False}}
        if status == 429:
            headers["retry-after"] = {"description": "Seconds until the bucket has a token again.",
                                      "schema": {"type": "string"}, "required": True}
        if status in (400, 502, 504, 508):
            headers["x-recserve-path"] = {"description": "The tiers tried, when the cascade ran.",
                                          "schema": {"type": "string"}, "required": False}
        answers[status] = {"description": ERROR_TEXT[status], "headers": headers,
                           "content": {"application/json": {"schema": ref(shape)}}}
    return answers


def _cascade(request: str, answer: str, event: Schema, summary: str, description: str,
             errors: Iterable[int] = CASCADE_ERRORS, error_shape: str = "OpenAIError") -> RouteDoc:
    """Keyword arguments for a route the cascade answers, JSON or an event stream (`stream: true`)."""
    ok: dict[str, Any] = {
        "description": "The answer; with `stream: true`, server-sent events.", "headers": DECISION_HEADERS,
        "content": {"application/json": {"schema": ref(answer)}, "text/event-stream": {"schema": event}}}
    return {"summary": summary, "description": description,
            "openapi_extra": {"requestBody": {"required": True,
                                              "content": {"application/json": {"schema": ref(request)}}}},
            "responses": {200: ok, **_errors(errors, error_shape)}}


_EXTENSION = ("Model `recserve` (the default policy), `recserve/<policy>` or `recserve/<tier>`; the optional "
              "`recserve` object (`task`, `labels`, `workload`) steers the decision and is stripped before "
              "forwarding. The decision comes back in the `x-recserve-*` headers.")
_CHAT_EVENT = _event({"anyOf": [ref("ChatCompletionChunk"), ref("OpenAIError")]})

CHAT_COMPLETIONS: Final[RouteDoc] = _cascade("ChatCompletionRequest", "ChatCompletion", _CHAT_EVENT,
                                   "Chat completion, offloaded up the tiers by confidence", _EXTENSION)
COMPLETIONS: Final[RouteDoc] = _cascade("CompletionRequest", "Completion",
                              _event({"anyOf": [ref("CompletionChunk"), ref("OpenAIError")]}),
                              "Text completion (legacy), offloaded up the tiers by confidence", _EXTENSION)
RESPONSES: Final[RouteDoc] = _cascade(
    "ResponsesRequest", "Response", _event({"anyOf": [ref("ResponseEvent"), ref("OpenAIError")]}),
    "OpenAI Responses API over the cascade",
    _EXTENSION + " The decision is also the Response's `recserve` field.")
MESSAGES: Final[RouteDoc] = _cascade(
    "MessagesRequest", "Message", _event({"anyOf": [ref("MessageEvent"), ref("AnthropicError")]}),
    "Anthropic Messages API over the cascade",
    _EXTENSION + " Authenticate with `x-api-key` or a bearer key; errors are in Anthropic's shape.",
    error_shape="AnthropicError")
COUNT_TOKENS: Final[RouteDoc] = {
    "summary": "Anthropic's token count of a Messages request, by the top tier's tokenizer where it offers one",
    "description": "The input tokens the request would cost at the last tier its model may reach: counted by "
                   "that tier (llama-server's chat template and tokenizer), else estimated with tiktoken; "
                   "`x-recserve-tokenizer` says which. Errors are in Anthropic's shape.",
    "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": ref("CountTokensRequest")}}}},
    "responses": {200: {"description": "The count.", "headers": {
        "x-recserve-tokenizer": {"description": "`tier:<name>` (the tier counted) or `tiktoken:cl100k_base` "
                                                "(an estimate).", "schema": {"type": "string"}, "required": True},
        "x-request-id": DECISION_HEADERS["x-request-id"]},
        "content": {"application/json": {"schema": ref("MessageTokensCount")}}},
        **_errors((400, 401, 404, 413, 415, 429, 431, 500), "AnthropicError")}}
EMBEDDINGS: Final[RouteDoc] = {
    "summary": "Embeddings from `embeddings_tier` (no cascade)",
    "openapi_extra": {"requestBody": {"required": True,
                                      "content": {"application/json": {"schema": ref("EmbeddingRequest")}}}},
    "responses": {200: {"description": "The tier's embeddings.", "headers": {
        name: DECISION_HEADERS[name] for name in ("x-recserve-tier", "x-request-id")},
        "content": {"application/json": {"schema": ref("EmbeddingList")}}}, **_errors(EMBEDDING_ERRORS)},
}
MODELS: Final[RouteDoc] = {"summary": "The model names this gateway answers to",
                 "responses": {200: {"description": "Model list.",
                                     "content": {"application/json": {"schema": ref("ModelList")}}},
                               **_errors((401, 500))}}
STORED_RESPONSE: Final[RouteDoc] = {"summary": "A stored Response", "responses": {
    200: {"description": "The stored Response.", "content": {"application/json": {"schema": ref("Response")}}},
    **_errors((401, 404, 500))}}
DELETE_RESPONSE: Final[RouteDoc] = {"summary": "Delete a stored Response", "responses": {
    200: {"description": "Deleted.", "content": {"application/json": {"schema": ref("ResponseDeleted")}}},
    **_errors((401, 404, 500))}}
HEALTHZ: Final[RouteDoc] = {"summary": "Liveness", "responses": {
    200: {"description": "The process lives.", "content": {"application/json": {"schema": ref("Status")}}}}}
READYZ: Final[RouteDoc] = {"summary": "Readiness", "responses": {
    200: {"description": "Ready.", "content": {"application/json": {"schema": ref("Status")}}},
    503: {"description": ERROR_TEXT[503], "content": {"application/json": {"schema": ref("Status")}}}}}


# Every /admin route: the admin key is checked before anything else.
ADMIN_ERROR_TEXT: Final[dict[int, str]] = {
    401: "Missing admin key: send `Authorization: Bearer <admin key>`.",
    403: "Incorrect admin key.",
    404: "The admin API is disabled: `auth.admin_key_env` names no set environment variable.",
    500: ERROR_TEXT[500],
}


def _admin(summary: str, ok: str, errors: Mapping[int, str] | None = None, *, query: Iterable[str] = (),
           body: bool = False) -> RouteDoc:
    """Keyword arguments for an admin route answering JSON."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}}}
    for status, text in sorted({**ADMIN_ERROR_TEXT, **(errors or {})}.items()):
        responses[status] = {"description": text, "content": {"application/json": {"schema": ref("OpenAIError")}}}
    extra: dict[str, Any] = {}
    if body:
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    if query:
        extra["parameters"] = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                               for name in query]
    return {"summary": summary, "responses": responses, "openapi_extra": extra}


ADMIN_RELOAD: Final[RouteDoc] = _admin(
    "Re-read the config file", "Reloaded (and announced to the other replicas when Redis is shared).",
    {400: "The config is invalid (`invalid_config`, one entry per problem in `error.errors`); the previous "
          "config keeps serving.",
     409: "Nothing to reload from (`reload_unavailable`): the gateway was started without a config file."})
ADMIN_CONFIG: Final[RouteDoc] = _admin("The running config, secrets redacted",
                                       "The config, its version and the replicas'.")
ADMIN_POLICY: Final[RouteDoc] = _admin("Per tier, tenant and workload: windows, thresholds, escalation, savings",
                                       "The policy view.")
ADMIN_POLICY_PATCH: Final[RouteDoc] = _admin(
    "Change β or CasServe thresholds at run time", "Updated; with Redis every replica follows.",
    {400: "Invalid JSON or an invalid change (`invalid_policy`, one entry per problem in `error.errors`).",
     413: "Body over 64 KiB.", 415: ERROR_TEXT[415]}, body=True)
ADMIN_WINDOWS_RESET: Final[RouteDoc] = _admin(
    "Empty windows: all, or one tier's, task's, workload's and/or tenant's", "Reset; the scopes emptied.",
    {400: "Unknown tier, task or tenant, or an invalid workload name (`param` names which).",
     503: "The shared window store is failing (`window_store_unavailable`): not every shared window was reset."},
    query=("tier", "task", "workload", "tenant"))
ADMIN_UI: Final[RouteDoc] = {"summary": "The live status page", "responses": {
    200: {"description": "The page (it holds no data: it polls /admin/policy with the key).",
          "content": {"text/html": {"schema": {"type": "string"}}}},
    404: {"description": ADMIN_ERROR_TEXT[404], "content": {"application/json": {"schema": ref("OpenAIError")}}}}}
METRICS: Final[RouteDoc] = {"summary": "Prometheus metrics", "responses": {
    200: {"description": "The Prometheus text exposition format.",
          "content": {"text/plain": {"schema": {"type": "string"}}}}}}


def request_schemas() -> dict[str, Schema]:
    """The request models' JSON schemas, named as components; `model` refers to `ModelName`."""
    mapping, top = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=REF)
    schemas: dict[str, Schema] = dict(top.get("$defs", {}))
    for model in REQUEST_MODELS:
        schema = schemas.setdefault(model.__name__, mapping[(model, "validation")])
        schema["properties"]["model"] = ref(MODEL_NAME)
    return schemas


def complete(document: dict[str, Any]) -> None:
    """Add the schemas the routes refer to to FastAPI's document, once (in place). FastAPI's `422`
    is dropped: this gateway answers a validation error with 400."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(copy.deepcopy(RESPONSE_SCHEMAS))
    schemas.update(request_schemas())
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            operation.get("responses", {}).pop("422", None)


def with_models(document: Mapping[str, Any], model_ids: list[str]) -> dict[str, Any]:
    """The document with `ModelName` listing the names this gateway answers to now (a reload can
    change them); the rest is shared with `document`."""
    components = dict(document.get("components", {}))
    components["schemas"] = {**components.get("schemas", {}), MODEL_NAME: {
        "type": "string", "enum": model_ids,
        "description": "`recserve`, `recserve/<policy>` or `recserve/<tier>` (`GET /v1/models` lists them); "
                       "anything else is a 404 `model_not_found`."}}
    return {**document, "components": components}
