"""Keys never leak: client keys, the admin key and the tiers' upstream api_keys appear in no response
body or header, not in /admin/config, /metrics or error messages, and not in the gateway's log.

Runs a real `recserve serve` process so that its whole stderr (access log, warnings, tracebacks)
is what gets searched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

CLIENT_KEY = "sk-client-SECRET-7f3a9c"
ADMIN_KEY = "sk-admin-SECRET-41be07"
UPSTREAM_KEY = "sk-upstream-SECRET-d2c8e5"
SECRETS = (CLIENT_KEY, ADMIN_KEY, UPSTREAM_KEY)
ENV = {"RECSERVE_SEC_CLIENT_KEYS": CLIENT_KEY, "RECSERVE_SEC_ADMIN_KEY": ADMIN_KEY,
       "RECSERVE_SEC_UPSTREAM_KEY": UPSTREAM_KEY}


@pytest.fixture
def secret_gateway(tiers: dict[str, ThreadedTier], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayProcess]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config: dict[str, Any] = {
        "auth": {"api_keys_env": "RECSERVE_SEC_CLIENT_KEYS", "admin_key_env": "RECSERVE_SEC_ADMIN_KEY"},
        "tiers": [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model,
                   "api_key_env": "RECSERVE_SEC_UPSTREAM_KEY", "timeout_s": 2}
                  for name in ("device", "edge", "cloud")],
        "logging": {"access_log": True, "include_prompts": True},
    }
    gateway = GatewayProcess("secrets", config, tmp_path)
    gateway.start()
    yield gateway
    gateway.stop()


def _exchanges(root: str) -> list[httpx.Response]:
    """Every kind of answer the gateway gives: successes, faults, client errors, admin reads."""
    chat = "/v1/chat/completions"
    responses: list[httpx.Response] = []
    good = {"authorization": f"Bearer {CLIENT_KEY}"}
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=root, timeout=10) as http:
        for prompt in ("plain", "[device:0.1][edge:0.1]", "[*:status=500]", "[*:status=401]", "[*:garbage]",
                       "[*:reset]", "[device:nologprobs]", "[*:status=400]", f"echo {CLIENT_KEY[:6]}"):
            body = {"model": "recserve", "messages": [{"role": "user", "content": prompt}]}
            responses.append(http.post(chat, json=body, headers=good))
            responses.append(http.post(chat, json={**body, "stream": True}, headers=good))
        responses += [
            http.post(chat, json={"model": "recserve"}, headers=good),
            http.post(chat, json={"model": "nope", "messages": []}, headers=good),
            http.post(chat, content=b"{not json", headers={**good, "content-type": "application/json"}),
            http.post(chat, json={"model": "recserve", "messages": []}, headers=admin),
            http.post(chat, json={"model": "recserve", "messages": []},
                      headers={"authorization": f"Bearer {CLIENT_KEY}x"}),
            http.get("/v1/models", headers=good),
            http.get("/admin/config", headers=admin),
            http.get("/admin/policy", headers=admin),
            http.get("/admin/config", headers=good),
            http.post("/admin/reload", headers=admin),
            http.get("/metrics"),
            http.get("/readyz"),
            http.get("/admin/ui", headers=admin),
        ]
    return responses


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_no_key_in_any_response_or_log(secret_gateway: GatewayProcess, tiers: dict[str, ThreadedTier]) -> None:
    root = secret_gateway.url.removesuffix("/v1")
    responses = _exchanges(root)
    statuses = {r.status_code for r in responses}
    assert {200, 400, 401, 403, 502} <= statuses  # the run did reach the error paths
    for response in responses:
        shown = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        assert not _leaks(shown), (response.request.url, response.status_code)
    config = next(r for r in responses if r.request.url.path == "/admin/config" and r.status_code == 200)
    assert "RECSERVE_SEC_UPSTREAM_KEY" in config.text  # the variable's name is shown, its value is not
    secret_gateway.stop()  # flush: everything the process wrote is in the file now
    log = secret_gateway.log()
    assert "recserve.access" in log or '"path"' in log  # the access log was on
    assert not _leaks(log)
    # The upstream key does go where it belongs: to the tiers, and only it.
    sent = [r.headers.get("authorization") for r in tiers["device"].requests if r.method == "POST"]
    assert sent and set(sent) == {f"Bearer {UPSTREAM_KEY}"}
