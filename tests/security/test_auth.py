"""Who gets in: client keys open /v1 only, the admin key opens /admin only; keys are compared in
constant time; bodies, headers and nesting are bounded."""

from __future__ import annotations

import inspect
import json

import httpx
import pytest

from gateway.config.tenants import Tenants
from gateway.ops import admin
from gateway.server import intake
from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway

CLIENT_KEY = "sk-client-key-for-security-tests"
OTHER_CLIENT_KEY = "sk-second-client-key"
ADMIN_KEY = "sk-admin-key-for-security-tests"
ADMIN_ENV = "RECSERVE_SECURITY_TEST_ADMIN_KEY"
CHAT = {"model": "recserve", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def locked(start_gateway: GatewayStarter, monkeypatch: pytest.MonkeyPatch) -> RunningGateway:
    monkeypatch.setenv(TEST_KEYS_ENV, f"{OTHER_CLIENT_KEY},{CLIENT_KEY}")
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    return start_gateway({"auth": {"admin_key_env": ADMIN_ENV},
                          "server": {"max_body_bytes": 4096, "max_header_bytes": 4096}})


def _client(gateway: RunningGateway, key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=gateway.root, headers=headers, timeout=10)


def _is_openai_error(response: httpx.Response) -> bool:
    body = response.json()
    return set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])


@pytest.mark.parametrize("key", [None, "wrong", ADMIN_KEY, CLIENT_KEY + "x", CLIENT_KEY[:-1]])
def test_v1_refuses_anything_but_a_client_key(locked: RunningGateway, key: str | None) -> None:
    with _client(locked, key) as http:
        for response in (http.post("/v1/chat/completions", json=CHAT), http.get("/v1/models")):
            assert response.status_code == 401
            assert _is_openai_error(response)


@pytest.mark.parametrize("key", [CLIENT_KEY, OTHER_CLIENT_KEY])
def test_every_configured_client_key_opens_v1(locked: RunningGateway, key: str) -> None:
    with _client(locked, key) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize("key,status", [(None, 401), (CLIENT_KEY, 403), (OTHER_CLIENT_KEY, 403),
                                        ("wrong", 403)])
def test_admin_refuses_client_keys(locked: RunningGateway, key: str | None, status: int) -> None:
    with _client(locked, key) as http:
        for response in (http.get("/admin/config"), http.get("/admin/policy"), http.post("/admin/reload"),
                         http.post("/admin/windows/reset", json={})):
            assert response.status_code == status, response.text
            assert _is_openai_error(response)


def test_admin_key_opens_admin(locked: RunningGateway) -> None:
    with _client(locked, ADMIN_KEY) as http:
        assert http.get("/admin/config").status_code == 200


def test_keys_are_compared_in_constant_time() -> None:
    # Not a timing measurement (tests never assert timings): the comparisons must be hmac's, and
    # the client check must look at every key rather than stop at the first match.
    client_check = inspect.getsource(Tenants.owner_of)
    assert "hmac.compare_digest" in client_check and "break" not in client_check and "return" not in \
        client_check.split("for entry in self.keys", 1)[1].split("\n        return owner", 1)[0]
    assert "owner_of" in inspect.getsource(intake.check_api_key)
    assert "hmac.compare_digest" in inspect.getsource(admin.require_admin)


def test_body_over_the_limit_is_413(locked: RunningGateway) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "a" * 8192}]}
    with _client(locked, CLIENT_KEY) as http:
        declared = http.post("/v1/chat/completions", json=big)
        assert declared.status_code == 413 and _is_openai_error(declared)

        def chunks() -> bytes:  # no content-length: the limit must hold while streaming the body in
            return json.dumps(big).encode()

        streamed = http.post("/v1/chat/completions", content=iter([chunks()]),
                             headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and _is_openai_error(streamed)


def test_headers_over_the_limit_are_431(locked: RunningGateway) -> None:
    with _client(locked, CLIENT_KEY) as http:
        response = http.post("/v1/chat/completions", json=CHAT, headers={"x-padding": "p" * 8192})
        assert response.status_code == 431 and _is_openai_error(response)
        many = {f"x-pad-{i}": "p" * 100 for i in range(60)}
        assert http.post("/v1/chat/completions", json=CHAT, headers=many).status_code == 431
        assert http.post("/v1/chat/completions", json=CHAT, headers={"x-small": "ok"}).status_code == 200


def test_nesting_and_content_type_are_refused(locked: RunningGateway) -> None:
    deep: object = "x"
    for _ in range(200):
        deep = [deep]
    with _client(locked, CLIENT_KEY) as http:
        nested = http.post("/v1/chat/completions", content=json.dumps({**CHAT, "user": deep}),
                           headers={"content-type": "application/json"})
        assert nested.status_code == 400 and _is_openai_error(nested)
        form = http.post("/v1/chat/completions", content=b"a=b",
                         headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and _is_openai_error(form)
