"""The admin API against a real gateway: the key guard, config redaction, policy view and changes,
window resets."""

from __future__ import annotations

import math

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import TEST_KEYS_ENV, GatewayStarter, ask

from .conftest import ADMIN_KEY, FileGateway, FileGatewayStarter


def test_admin_is_404_with_a_clear_message_when_no_admin_key_is_configured(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway()  # the shared fixtures configure no admin key
    with httpx.Client(base_url=gateway.root, headers={"authorization": "Bearer anything"}) as http:
        for method, path in [("GET", "/admin/config"), ("GET", "/admin/policy"), ("POST", "/admin/reload"),
                             ("PATCH", "/admin/policy"), ("POST", "/admin/windows/reset"), ("GET", "/admin/ui")]:
            response = http.request(method, path)
            assert response.status_code == 404, (method, path)
            error = response.json()["error"]
            assert error["code"] == "admin_disabled"
            assert "admin API is disabled" in error["message"]


def test_admin_key_missing_is_401_and_wrong_is_403(file_gateway: FileGateway) -> None:
    with file_gateway.admin(key=None) as http:
        missing = http.get("/admin/config")
    with file_gateway.admin(key="not-the-key") as http:
        wrong = http.get("/admin/config")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_admin_key"
    assert set(missing.json()["error"]) >= {"message", "type", "param", "code"}
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_admin_key"


def test_client_keys_do_not_open_admin_and_the_admin_key_does_not_serve_v1(
        start_file_gateway: FileGatewayStarter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "client-key-1")
    gateway = start_file_gateway()
    with gateway.admin(key="client-key-1") as http:
        assert http.get("/admin/policy").status_code == 403
    with httpx.Client(base_url=gateway.root) as http:
        as_admin = http.get("/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        as_client = http.get("/v1/models", headers={"authorization": "Bearer client-key-1"})
    assert as_admin.status_code == 401
    assert as_client.status_code == 200


def test_config_is_shown_with_secrets_redacted(start_file_gateway: FileGatewayStarter) -> None:
    gateway = start_file_gateway({"windows": {"redis_url": "redis://user:hunter2@127.0.0.1:6390/0?password=x"}})
    with gateway.admin() as http:
        shown = http.get("/admin/config").json()
    text = str(shown)
    assert "hunter2" not in text
    assert shown["config"]["windows"]["redis_url"].startswith("redis://user:***@127.0.0.1:6390/0")
    assert shown["config"]["tiers"][0]["name"] == "device"
    assert shown["version"] == 0 and shown["clustered"] is False
    assert [r["version"] for r in shown["replicas"]] == [0]
    assert ADMIN_KEY not in text


def _generation_request(sdk: openai.OpenAI, prompt: str) -> None:
    ask(sdk, prompt, max_tokens=16)


def test_policy_view_matches_the_windows(file_gateway: FileGateway) -> None:
    device = [0.9, 0.1, 0.8, 0.7, 0.2, 0.6]
    with file_gateway.sdk() as sdk:
        for i, p in enumerate(device):
            _generation_request(sdk, f"q{i} [device:{p}][edge:0.95]")
    with file_gateway.admin() as http:
        view = http.get("/admin/policy").json()
    tier = {t["name"]: t for t in view["tiers"]}
    stats = tier["device"]["recserve"]["tasks"]["generation"]
    assert stats["window_length"] == len(device)
    assert stats["beta"] == 0.3
    expected = float(np.percentile(device, 30))
    assert math.isclose(stats["threshold"], expected, rel_tol=0, abs_tol=1e-12)
    assert stats["escalation_rate"] == sum(1 for c in device if c < expected) / len(device)
    assert math.isclose(stats["quantiles"]["p50"], float(np.percentile(device, 50)), abs_tol=1e-12)
    assert sum(stats["histogram"]) == len(device)
    assert tier["cloud"]["recserve"] is None and tier["cloud"]["final"] is True
    assert view["requests"] == len(device)
    assert sum(t["served"] for t in view["tiers"]) == len(device)
    assert tier["device"]["share"] == tier["device"]["served"] / len(device)
    assert 0 < view["communication"]["saved"] < 1


def test_patch_changes_beta_and_casserve_thresholds_at_run_time(file_gateway: FileGateway) -> None:
    with file_gateway.admin() as http:
        changed = http.patch("/admin/policy", json={"recserve": {"beta": {"device": 0.5}},
                                                    "casserve": {"thresholds": {"device": 0.5}}})
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 1
        view = http.get("/admin/policy").json()
    device = view["tiers"][0]
    assert device["recserve"]["beta"] == 0.5 and device["recserve"]["beta_overridden"] is True
    assert device["casserve"]["threshold"] == 0.5
    # CasServe now keeps a 0.6 answer at the device (θ 0.8 from the file would have escalated it).
    with file_gateway.sdk() as sdk:
        _, headers = ask(sdk, "[device:0.6][edge:0.95]", model="recserve/casserve", max_tokens=16)
    assert headers["x-recserve-path"] == "device"
    assert headers["x-recserve-threshold"] == "0.5"
    with file_gateway.admin() as http:
        removed = http.patch("/admin/policy", json={"casserve": {"thresholds": {"device": None}}})
    assert removed.json()["overrides"]["casserve"]["thresholds"] == {}


def test_an_invalid_patch_lists_every_problem_and_changes_nothing(file_gateway: FileGateway) -> None:
    with file_gateway.admin() as http:
        response = http.patch("/admin/policy", json={
            "recserve": {"beta": {"device": 1.5, "cloud": 0.2, "nowhere": 0.1}, "window": 5},
            "casserve": {"thresholds": {"edge": "high"}}, "extra": 1})
        assert response.status_code == 400
        errors = response.json()["error"]["errors"]
        view = http.get("/admin/policy").json()
    assert "recserve.beta.device: must be a number in (0, 1), got 1.5" in errors
    assert any(e.startswith("recserve.beta.cloud:") for e in errors)
    assert any(e.startswith("recserve.beta.nowhere:") for e in errors)
    assert any(e.startswith("recserve.window:") for e in errors)
    assert any(e.startswith("casserve.thresholds.edge:") for e in errors)
    assert "extra: unknown key" in errors
    assert view["version"] == 0
    assert view["tiers"][0]["recserve"]["beta"] == 0.3


def test_windows_reset_all_or_one_tier_and_task(file_gateway: FileGateway) -> None:
    with file_gateway.sdk() as sdk:
        for i, p in enumerate([0.9, 0.1, 0.8]):
            _generation_request(sdk, f"r{i} [device:{p}][edge:0.2]")
    with file_gateway.admin() as http:
        one = http.post("/admin/windows/reset", params={"tier": "edge", "task": "generation"})
        assert one.json()["windows"] == ["edge/generation"]
        view = http.get("/admin/policy").json()
        assert view["tiers"][0]["recserve"]["tasks"]["generation"]["window_length"] == 3
        assert view["tiers"][1]["recserve"]["tasks"]["generation"]["window_length"] == 0
        assert http.post("/admin/windows/reset", params={"tier": "moon"}).status_code == 400
        assert http.post("/admin/windows/reset").json()["windows"] == "all"
        view = http.get("/admin/policy").json()
    assert view["tiers"][0]["recserve"]["tasks"]["generation"]["window_length"] == 0


def test_reload_without_a_config_file_is_a_clear_409(start_gateway: GatewayStarter,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_ADMIN_TEST_KEY", ADMIN_KEY)
    gateway = start_gateway({"auth": {"admin_key_env": "RECSERVE_ADMIN_TEST_KEY"}})
    with httpx.Client(base_url=gateway.root, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
        response = http.post("/admin/reload")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "reload_unavailable"
