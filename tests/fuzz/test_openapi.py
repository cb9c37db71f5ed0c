"""Schemathesis against the gateway's own OpenAPI schema: 0 server errors, every error in OpenAI's
shape, answers matching the schema.

The schema FastAPI publishes has no request bodies for the completion routes (they read the raw
request, for speed) and declares only `200`. So the schema is completed here from the gateway's own
pydantic request models (`gateway.protocol`) and OpenAI's error shape before fuzzing; the routes,
methods and responses are the gateway's. Requests go to a real gateway (uvicorn) over scripted tiers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import BaseModel
from schemathesis import Case
from schemathesis.checks import not_a_server_error, response_schema_conformance

from gateway.app import create_app
from gateway.config import parse_config
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread

ERROR = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                             "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                            "param": {"type": ["string", "null"]},
                                            "code": {"type": ["string", "null"]}}}},
}
COMPLETION = {"type": "object", "required": ["id", "object", "model", "choices"],
              "properties": {"choices": {"type": "array", "minItems": 1}, "model": {"type": "string"}}}
# One server-sent event as schemathesis parses it: its `data` field is a chunk's (or an error's) JSON.
CHUNK = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string", "minLength": 1}}}
BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}
TIER_NAMES = ("device", "edge", "cloud")
MODELS = ["recserve", "recserve/recserve", "recserve/casserve", "recserve/quality",
          *(f"recserve/{n}" for n in TIER_NAMES)]


def _config(tiers: dict[str, str] | None = None) -> dict[str, Any]:
    urls = tiers or {name: "http://127.0.0.1:9/v1" for name in TIER_NAMES}
    return {"auth": {"api_keys_env": "RECSERVE_FUZZ_KEYS_NEVER_SET", "admin_key_env": None},
            "server": {"request_timeout_s": 3}, "embeddings_tier": "device",
            "tiers": [{"name": n, "base_url": urls[n], "model": f"{n}-model", "timeout_s": 2} for n in TIER_NAMES]}


def completed_schema() -> dict[str, Any]:
    """The gateway's OpenAPI document with request bodies and error responses filled in."""
    document = create_app(parse_config(_config())).openapi()
    for path, model in BODIES.items():
        operation = document["paths"][path]["post"]
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        # The gateway's own model names, so that fuzzing reaches the cascade instead of a 404.
        body["properties"]["model"] = {"type": "string", "enum": MODELS}
        for name, definition in body.pop("$defs", {}).items():
            document.setdefault("components", {}).setdefault("schemas", {})[name] = definition
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        answer = COMPLETION if path != "/v1/embeddings" else {"type": "object"}
        operation["responses"]["200"] = {"description": "answer", "content": {
            "application/json": {"schema": answer}, "text/event-stream": {"schema": CHUNK}}}
    for methods in document["paths"].values():
        for operation in methods.values():
            operation["responses"]["default"] = {"description": "an error in OpenAI's shape",
                                                 "content": {"application/json": {"schema": ERROR}}}
    return document


# Only the client-facing routes and probes: /admin is disabled here, /admin/ui and /metrics are not JSON.
schema = schemathesis.openapi.from_dict(completed_schema()).include(path_regex=r"^/(v1/|healthz|readyz)")


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in TIER_NAMES}
    server = UvicornThread(create_app(parse_config(_config({n: t.base_url for n, t in tiers.items()})))).start()
    yield server.base_url
    server.stop()
    for tier in tiers.values():
        tier.stop()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: Case[Any], gateway_url: str) -> None:
    response = case.call(base_url=gateway_url, timeout=15)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
