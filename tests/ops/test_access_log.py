"""The JSON access log: one object per request with id, tier path, confidence and latency; the
prompt only when `logging.include_prompts` is on."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import ask

from .conftest import FileGatewayStarter


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "recserve.access"]


def test_one_json_line_per_request_without_the_prompt(start_file_gateway: FileGatewayStarter,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    gateway = start_file_gateway()
    caplog.set_level("INFO", logger="recserve.access")
    with gateway.sdk() as sdk:
        ask(sdk, "secret words [device:0.9]", max_tokens=16, extra_headers={"x-request-id": "trace-1"})
        ask(sdk, "more secret words [device:0.1][edge:0.8]", max_tokens=16, extra_headers={"x-request-id": "trace-2"})
    lines = _lines(caplog)
    assert [line["request_id"] for line in lines] == ["trace-1", "trace-2"]
    second = lines[1]
    assert second["path"] == "/v1/chat/completions" and second["status"] == 200
    assert second["tier_path"] == "device>edge" and second["tier"] == "edge"
    assert second["confidence"] == pytest.approx(0.8)
    assert second["task"] == "generation"
    assert second["latency_ms"] >= second["tier_ms"] > 0
    assert "prompt" not in second
    assert not any("secret" in json.dumps(line) for line in lines)


def test_prompts_are_logged_only_when_asked(start_file_gateway: FileGatewayStarter,
                                            caplog: pytest.LogCaptureFixture) -> None:
    gateway = start_file_gateway({"logging": {"include_prompts": True}})
    caplog.set_level("INFO", logger="recserve.access")
    with gateway.sdk() as sdk:
        ask(sdk, "visible words [device:0.9]", max_tokens=16)
    (line,) = _lines(caplog)
    assert line["prompt"] == [{"role": "user", "content": "visible words [device:0.9]"}]


def test_failures_and_admin_changes_are_logged(start_file_gateway: FileGatewayStarter,
                                               caplog: pytest.LogCaptureFixture) -> None:
    gateway = start_file_gateway()
    caplog.set_level("INFO", logger="recserve.access")
    with gateway.sdk() as sdk, pytest.raises(openai.InternalServerError):
        ask(sdk, "[*:status=500]", max_tokens=16)  # 502: every tier failed
    with gateway.admin() as http:
        http.get("/admin/policy")
        http.post("/admin/reload")
    lines = _lines(caplog)
    assert [(line["path"], line["status"]) for line in lines] == [("/v1/chat/completions", 502),
                                                                   ("/admin/reload", 200)]
    assert lines[0]["tier_path"] == "device!>edge!>cloud!" and lines[0]["tier"] is None
