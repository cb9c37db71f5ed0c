"""A client cannot choose or alter the upstream (no SSRF through any field or header), and what an
upstream sends back in its headers (auth challenges, cookies, hop-by-hop) never reaches the client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BOTH_BACKENDS, GatewayStarter, RunningGateway
from tests.support.scripted_tier import ThreadedTier


@pytest.fixture(scope="module")
def canary() -> Iterator[ThreadedTier]:
    """A server nobody configured: any request reaching it is an SSRF."""
    server = ThreadedTier("canary").start()
    yield server
    server.stop()


def _attacks(canary_url: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    root = canary_url.removesuffix("/v1")
    fields: list[dict[str, Any]] = [
        {"base_url": canary_url}, {"api_base": canary_url}, {"url": canary_url}, {"endpoint": canary_url},
        {"extra_body": {"api_base": canary_url}}, {"custom_llm_provider": "openai", "api_base": canary_url},
        {"extra_headers": {"host": root.removeprefix("http://")}},
        {"recserve": {"task": "generation", "base_url": canary_url}},
        {"metadata": {"base_url": canary_url}}, {"user": canary_url},
    ]
    headers: list[dict[str, str]] = [
        {"x-forwarded-host": root.removeprefix("http://")}, {"x-forwarded-proto": "http"},
        {"forwarded": f"host={root.removeprefix('http://')}"}, {"x-original-url": canary_url},
        {"x-rewrite-url": canary_url}, {"x-recserve-base-url": canary_url}, {"x-api-base": canary_url},
        {"x-recserve-via": "canary"},
    ]
    return fields, headers


@BOTH_BACKENDS
def test_no_field_or_header_reaches_another_host(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                                 canary: ThreadedTier) -> None:
    gateway = start_gateway()
    fields, headers = _attacks(canary.base_url)
    canary.clear()
    answered = 0
    with httpx.Client(base_url=gateway.root, timeout=10) as http:
        for extra in fields:
            body = {"model": "recserve/device", "messages": [{"role": "user", "content": "hi"}], **extra}
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code in (200, 400), response.text
            answered += response.status_code == 200
        for header in headers:
            body = {"model": "recserve/device", "messages": [{"role": "user", "content": "hi"}]}
            response = http.post("/v1/chat/completions", json=body, headers=header)
            assert response.status_code == 200, (header, response.text)
            answered += 1
        host = canary.base_url.removeprefix("http://").removesuffix("/v1")
        spoofed = http.post("/v1/chat/completions", headers={"host": host},
                            json={"model": "recserve/device", "messages": [{"role": "user", "content": "hi"}]})
        assert spoofed.status_code == 200
        for model in (f"recserve/{canary.base_url}", canary.base_url, "recserve/canary"):
            wrong = http.post("/v1/chat/completions", json={"model": model, "messages": []})
            assert wrong.status_code in (400, 404)
    assert canary.requests == []
    assert len([r for r in tiers["device"].requests if r.method == "POST"]) == answered + 1


HOSTILE_HEADERS = {
    "authorization": "Bearer upstream-token", "proxy-authenticate": "Basic", "www-authenticate": "Bearer",
    "set-cookie": "session=upstream", "x-api-key": "upstream-key", "keep-alive": "timeout=999",
    "upgrade": "h2c", "proxy-authorization": "Basic dXA=", "te": "trailers", "trailer": "x-secret",
    "x-upstream-secret": "s3cret",
}


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_headers_are_not_forwarded(gateway: RunningGateway, stream: bool) -> None:
    script = "".join(f"[device:header={name}:{value}]" for name, value in HOSTILE_HEADERS.items())
    body = {"model": "recserve/device", "stream": stream,
            "messages": [{"role": "user", "content": f"hi {script}"}]}
    with httpx.Client(base_url=gateway.root, timeout=10) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    leaked = {name for name in HOSTILE_HEADERS if name in response.headers}
    assert leaked == set()
    assert "s3cret" not in str(response.headers) and "upstream-token" not in response.text
