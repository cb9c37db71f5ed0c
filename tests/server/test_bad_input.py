"""A client's mistakes get a clear 4xx in OpenAI's error shape; never a 500, never lost."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway, ask
from tests.support.scripted_tier import ThreadedTier

CHAT = "/v1/chat/completions"
GOOD = {"model": "recserve", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


@pytest.mark.parametrize(("field", "value"), [
    ("stream", "yes"), ("temperature", "hot"), ("temperature", 3), ("max_tokens", 0), ("max_tokens", "5"),
    ("n", 0), ("top_logprobs", 21), ("logprobs", "true"), ("stop", 5), ("messages", "hello"),
    ("messages", []), ("model", 7), ("recserve", {"task": "poetry"}), ("recserve", {"labels": []}),
    ("recserve", {"colour": "red"}),
])
def test_schema_violations_are_400_naming_the_field(http: httpx.Client, field: str, value: Any) -> None:
    error = assert_openai_error(http.post(CHAT, json={**GOOD, field: value}), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"].split(".")[0].split("[")[0] == field


def test_bad_message_role_names_the_path(http: httpx.Client) -> None:
    body = {**GOOD, "messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}
    assert_openai_error(http.post(CHAT, json=body), 400, "messages[1].role")


def test_missing_fields(http: httpx.Client) -> None:
    error = assert_openai_error(http.post(CHAT, json={"model": "recserve"}), 400, "messages")
    assert error["message"] == "Missing required parameter: 'messages'."
    assert_openai_error(http.post("/v1/completions", json={"model": "recserve"}), 400, "prompt")


@pytest.mark.parametrize("body", [b"{", b"", b"[1, 2]", b"\"text\"", b"\xff\xfe", b"{\"model\": NaN"])
def test_unparseable_bodies_are_400(http: httpx.Client, body: bytes) -> None:
    response = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


def test_json_nested_too_deep_is_400(http: httpx.Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert_openai_error(http.post(CHAT, content=deep, headers={"content-type": "application/json"}), 400)
    nested: Any = "x"
    for _ in range(80):
        nested = {"k": nested}
    assert_openai_error(http.post(CHAT, json={**GOOD, "metadata": nested}), 400)


def test_wrong_content_type_is_415(http: httpx.Client) -> None:
    response = http.post(CHAT, content=json.dumps(GOOD), headers={"content-type": "text/plain"})
    assert_openai_error(response, 415)
    assert_openai_error(http.post(CHAT, data={"model": "recserve"}), 415)


def test_body_over_the_limit_is_413(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"server": {"max_body_bytes": 2048}})
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    with httpx.Client(base_url=gateway.root) as raw:
        assert_openai_error(raw.post(CHAT, json=big), 413)
        # Without Content-Length (chunked upload) the limit still holds.
        chunks = iter([json.dumps(big).encode()[i:i + 1000] for i in range(0, 5200, 1000)])
        response = raw.post(CHAT, content=chunks, headers={"content-type": "application/json"})
        assert_openai_error(response, 413)


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, "hi", model="gpt-17")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        ask(client, "hi", model="recserve/mars")


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404)
    assert_openai_error(http.get(CHAT), 405)


def test_hop_limit_is_508(http: httpx.Client) -> None:
    response = http.post(CHAT, json=GOOD, headers={"x-recserve-hops": "4"})
    assert_openai_error(response, 508)
    assert_openai_error(http.post(CHAT, json=GOOD, headers={"x-recserve-hops": "many"}), 400)


@pytest.mark.parametrize("hops", ["-5", "-0", "+1", "1_0", "1.0", "\u0663", "9" * 400, "1000", ""])
def test_hop_header_must_be_a_small_non_negative_integer(http: httpx.Client, tiers: dict[str, ThreadedTier],
                                                         hops: str) -> None:
    response = http.post(CHAT, json=GOOD, headers={"x-recserve-hops": hops.encode()})
    assert_openai_error(response, 400, param="x-recserve-hops")
    assert all(not tier.requests for tier in tiers.values())  # refused before any tier was asked


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["recserve", "recserve/recserve", "recserve/casserve", "recserve/quality",
                   "recserve/device", "recserve/edge", "recserve/cloud"]


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok", "recserve_version": metadata.version("recserve")}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["tiers"] == ["device", "edge", "cloud"]


@pytest.fixture
def keyed_gateway(start_gateway: GatewayStarter, monkeypatch: pytest.MonkeyPatch) -> RunningGateway:
    monkeypatch.setenv(TEST_KEYS_ENV, "key-one, key-two")
    return start_gateway()


def test_client_keys_are_enforced(keyed_gateway: RunningGateway) -> None:
    for key in ("wrong", "key-one-but-longer", "key"):
        with keyed_gateway.sdk(api_key=key) as sdk, pytest.raises(openai.AuthenticationError) as caught:
            ask(sdk, "hi")
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == "invalid_api_key"
    for key in ("key-one", "key-two"):
        with keyed_gateway.sdk(api_key=key) as sdk:
            _, headers = ask(sdk, "hi")
            assert headers["x-recserve-tier"] == "device"
    with httpx.Client(base_url=keyed_gateway.root) as raw:
        assert_openai_error(raw.post(CHAT, json=GOOD), 401)
        assert_openai_error(raw.get("/v1/models"), 401)
        assert raw.get("/healthz").status_code == 200  # probes need no key


def test_a_request_that_already_passed_this_gateway_is_a_loop(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"server": {"instance_id": "edge-site-1"}})
    with httpx.Client(base_url=gateway.root) as raw:
        error = assert_openai_error(raw.post(CHAT, json=GOOD, headers={"x-recserve-via": "dev-7, edge-site-1"}), 508)
        assert "edge-site-1" in error["message"]
        assert raw.post(CHAT, json=GOOD, headers={"x-recserve-via": "dev-7"}).status_code == 200


def test_forwarded_requests_carry_hops_and_via(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    ask(client, "hi", extra_headers={"x-recserve-hops": "1", "x-recserve-via": "upstream-a"})
    headers = tiers["device"].requests[0].headers
    assert headers["x-recserve-hops"] == "2"
    assert headers["x-recserve-via"].startswith("upstream-a,gw-")
