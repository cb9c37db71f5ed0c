"""Which release runs: `recserve --version`, and a real `recserve serve` process saying it in /healthz,
/readyz and its OpenAPI document, with no `server` header on any answer (uvicorn's is turned off)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import httpx

from tests.conftest import base_config
from tests.support.processes import GatewayProcess, recserve_command
from tests.support.scripted_tier import ThreadedTier

VERSION = metadata.version("recserve")


def test_recserve_version_prints_the_package_version() -> None:
    result = subprocess.run([*recserve_command(), "--version"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"recserve {VERSION}"


def test_a_running_gateway_says_its_version_and_sends_no_server_header(tmp_path: Path,
                                                                       tiers: dict[str, ThreadedTier]) -> None:
    gateway = GatewayProcess("version", base_config(tiers), tmp_path).start()
    try:
        root = gateway.url.removesuffix("/v1")
        with httpx.Client(base_url=root, timeout=30) as http:
            health = http.get("/healthz")
            ready = http.get("/readyz")
            document = http.get("/openapi.json")
            answer = http.post("/v1/chat/completions", json={"model": "recserve",
                                                              "messages": [{"role": "user", "content": "hi"}]})
            missing = http.get("/v1/messages/batches")
    finally:
        gateway.stop()
    assert health.json() == {"status": "ok", "recserve_version": VERSION}
    assert ready.json()["recserve_version"] == VERSION and ready.json()["status"] == "ready"
    assert document.json()["info"]["version"] == VERSION
    assert answer.status_code == 200 and missing.status_code == 404
    for response in (health, ready, document, answer, missing):
        assert "server" not in response.headers, response.headers
