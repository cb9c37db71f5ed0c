"""Schemathesis against the OpenAPI document the gateway serves at `/openapi.json`, taken as is:
0 server errors, every status documented, every answer (JSON or each server-sent event) and every
documented header matching it, every error in OpenAI's shape (Anthropic's on /v1/messages).
Requests go to a real gateway (uvicorn) over scripted tiers; each route gets at least
`MIN_CASES` generated cases."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.config.loading import parse_config
from gateway.server.app import create_app
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread

TIER_NAMES = ("device", "edge", "cloud")
MIN_CASES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# Only the client-facing routes and probes: /admin is disabled here, /admin/ui and /metrics are not JSON.
CLIENT_PATHS = r"^/(v1/|healthz|readyz)"


def fuzz_config(tiers: dict[str, str] | None = None) -> dict[str, Any]:
    urls = tiers or {name: "http://127.0.0.1:9/v1" for name in TIER_NAMES}
    return {"auth": {"api_keys_env": "RECSERVE_FUZZ_KEYS_NEVER_SET", "admin_key_env": None},
            "server": {"request_timeout_s": 3}, "embeddings_tier": "device",
            "tiers": [{"name": n, "base_url": urls[n], "model": f"{n}-model", "timeout_s": 2} for n in TIER_NAMES]}


def serve(config: Callable[[dict[str, str]], dict[str, Any]]) -> Iterator[str]:
    """A real gateway (uvicorn) over scripted tiers, with `config(tier URLs)`; yields its URL."""
    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in TIER_NAMES}
    server = UvicornThread(create_app(parse_config(config({n: t.base_url for n, t in tiers.items()})))).start()
    yield server.base_url
    server.stop()
    for tier in tiers.values():
        tier.stop()


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    yield from serve(fuzz_config)


@pytest.fixture(scope="module")
def cases_per_route() -> Counter[str]:
    return Counter()


# The document as GET /openapi.json serves it, from an app with the fuzzed gateway's config (its
# tiers' names, so its model names; only their URLs differ), read over ASGI when the module loads.
SERVED = schemathesis.openapi.from_asgi("/openapi.json", create_app(parse_config(fuzz_config()))).raw_schema
schema = schemathesis.openapi.from_dict(SERVED).include(path_regex=CLIENT_PATHS)


@schema.parametrize()
@settings(max_examples=MIN_CASES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: Case[Any], gateway_url: str, cases_per_route: Counter[str]) -> None:
    cases_per_route[f"{case.method.upper()} {case.path}"] += 1
    response = case.call(base_url=gateway_url, timeout=15)
    case.validate_response(response, checks=CHECKS)


def test_every_route_with_inputs_got_enough_cases(cases_per_route: Counter[str]) -> None:
    """Runs after test_api (file order): a route that takes a body or parameters got MIN_CASES or more;
    one without inputs (/healthz, /v1/models) has a single distinct request."""
    documented = {f"{method.upper()} {path}": "requestBody" in operation or bool(operation.get("parameters"))
                  for path, methods in SERVED["paths"].items() if re.match(CLIENT_PATHS, path)
                  for method, operation in methods.items()}
    print("cases per documented route:", {label: cases_per_route[label] for label in sorted(documented)})
    for label, has_inputs in documented.items():
        assert cases_per_route[label] >= (MIN_CASES if has_inputs else 1), (label, cases_per_route[label])
