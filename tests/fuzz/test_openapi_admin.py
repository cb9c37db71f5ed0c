"""Schemathesis against the admin routes and /metrics of the served OpenAPI document, with the admin
API enabled: 0 server errors, every status documented, every JSON answer (errors in OpenAI's shape)
matching it. Cases carry the admin key; /admin/ui is also called without it (a 200 page), and an
admin route with none and with a wrong one (401, 403: documented)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from gateway.config.loading import parse_config
from gateway.server.app import create_app
from tests.fuzz.test_openapi import CHECKS, fuzz_config, serve

ADMIN_KEY_ENV = "RECSERVE_FUZZ_ADMIN_KEY"
ADMIN_KEY = "fuzz-admin-key"
ADMIN_PATHS = r"^/(admin/|metrics)"
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def admin_config(tiers: dict[str, str] | None = None) -> dict[str, Any]:
    config = fuzz_config(tiers)
    config["auth"] = {**config["auth"], "admin_key_env": ADMIN_KEY_ENV}
    return config


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_KEY_ENV, ADMIN_KEY)
        yield from serve(admin_config)


@pytest.fixture(scope="module")
def cases_per_route() -> Counter[str]:
    return Counter()


SERVED = schemathesis.openapi.from_asgi("/openapi.json", create_app(parse_config(admin_config()))).raw_schema
schema = schemathesis.openapi.from_dict(SERVED).include(path_regex=ADMIN_PATHS)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api(case: Case[Any], gateway_url: str, cases_per_route: Counter[str]) -> None:
    cases_per_route[f"{case.method.upper()} {case.path}"] += 1
    response = case.call(base_url=gateway_url, headers=AUTH, timeout=15)
    case.validate_response(response, checks=CHECKS)


def test_routes_with_inputs_got_cases(cases_per_route: Counter[str]) -> None:
    """Runs after test_admin_api (file order): the body and the query parameters were fuzzed."""
    assert cases_per_route["PATCH /admin/policy"] >= 40 and cases_per_route["POST /admin/windows/reset"] >= 40, \
        cases_per_route


def test_every_admin_route_documents_the_key_check(gateway_url: str) -> None:
    """No key: 401; a wrong key: 403; both documented in the shape the gateway answers."""
    for path, methods in SERVED["paths"].items():
        if not path.startswith("/admin/") or path == "/admin/ui":
            continue
        for method, operation in methods.items():
            for headers, status in (({}, 401), ({"authorization": "Bearer wrong"}, 403)):
                answer = httpx.request(method, gateway_url + path, headers=headers, timeout=10)
                assert answer.status_code == status, (method, path, answer.text)
                assert str(status) in operation["responses"], (method, path)
                assert set(answer.json()["error"]) >= {"message", "type", "param", "code"}
    page = httpx.get(gateway_url + "/admin/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
