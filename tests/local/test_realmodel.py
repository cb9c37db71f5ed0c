"""The real llama-server with the three packaged models: start, logprob layouts, and bad states.

Marked `realmodel`: uses (or fills) the cache under ~/.cache/recserve (RECSERVE_CACHE_DIR).
The logprob layouts observed here are what gateway/policies parse; they are written to
`<tmp>/logprob-layouts.json` for the record.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.local.catalog import lookup
from gateway.local.models import model_path
from gateway.local.paths import CacheLayout
from gateway.local.server_build import ensure_server
from gateway.local.supervisor import PortInUseError, RunningTier, TierSpec, TierStartError, start_tier
from tests.local.realtiers import REAL_TIERS, free_port

pytestmark = pytest.mark.realmodel

QUESTION = "Is the sky blue on a clear day? Answer yes or no."
# A prompt every tier continues with a non-empty answer (SmolLM2 ends a bare "Q: ...\nA:" at once).
COMPLETION_PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Examples of what each endpoint returned, written out at the end of the module."""
    seen: dict[str, Any] = {}
    yield seen
    out = tmp_path_factory.getbasetemp() / "logprob-layouts.json"
    out.write_text(json.dumps(seen, indent=2), encoding="utf-8")
    print(f"logprob layouts written to {out}", file=sys.stderr)


def _chat(tier: RunningTier, content: str, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0, **extra}
    reply = httpx.post(f"{tier.base_url}/v1/chat/completions", json=body, timeout=60)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def _completion(tier: RunningTier, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": 3, "temperature": 0, **extra}
    reply = httpx.post(f"{tier.base_url}/v1/completions", json=body, timeout=60)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def _assert_chat_layout(entries: Any, top: int) -> None:
    assert isinstance(entries, list) and entries, entries
    for entry in entries:
        assert isinstance(entry["token"], str)
        assert math.isfinite(entry["logprob"]) and entry["logprob"] <= 0.0
        alternatives = entry["top_logprobs"]
        assert 1 <= len(alternatives) <= top
        assert all(isinstance(a["token"], str) and a["logprob"] <= 0.0 for a in alternatives)
        # The chosen token is usually the first alternative at temperature 0.
        assert max(a["logprob"] for a in alternatives) >= entry["logprob"] - 1e-6


@pytest.mark.parametrize("name", [name for name, _, _ in REAL_TIERS])
def test_chat_returns_chat_layout_logprobs(
    real_tiers: dict[str, RunningTier], layouts: dict[str, Any], name: str
) -> None:
    data = _chat(real_tiers[name], QUESTION, logprobs=True, top_logprobs=5)
    logprobs = data["choices"][0]["logprobs"]
    _assert_chat_layout(logprobs["content"], 5)
    layouts.setdefault("chat", {})[name] = data


@pytest.mark.parametrize("name", [name for name, _, _ in REAL_TIERS])
def test_completions_with_integer_logprobs(
    real_tiers: dict[str, RunningTier], layouts: dict[str, Any], name: str
) -> None:
    # The legacy OpenAI form `logprobs: 5` (what the gateway forwards on /v1/completions).
    data = _completion(real_tiers[name], COMPLETION_PROMPT, logprobs=5)
    logprobs = data["choices"][0]["logprobs"]
    layouts.setdefault("completions_logprobs_int", {})[name] = data
    # llama.cpp answers in the chat layout (content[*].top_logprobs), not tokens/token_logprobs.
    _assert_chat_layout(logprobs["content"], 5)
    assert "token_logprobs" not in logprobs and "tokens" not in logprobs
    assert any(len(entry["top_logprobs"]) == 5 for entry in logprobs["content"])


def test_completions_ignore_top_logprobs(real_tiers: dict[str, RunningTier], layouts: dict[str, Any]) -> None:
    # On /v1/completions only an integer `logprobs` asks for alternatives: `logprobs: true` gives
    # one per token whatever `top_logprobs` says, and `top_logprobs` alone gives none.
    boolean = _completion(real_tiers["device"], COMPLETION_PROMPT, logprobs=True, top_logprobs=3)
    layouts["completions_logprobs_true_top_logprobs_3"] = boolean
    entries = boolean["choices"][0]["logprobs"]["content"]
    _assert_chat_layout(entries, 1)
    alone = _completion(real_tiers["device"], COMPLETION_PROMPT, top_logprobs=3)
    assert alone["choices"][0].get("logprobs") is None


def test_confidences_differ_across_prompts(real_tiers: dict[str, RunningTier]) -> None:
    # Real logprobs, not a constant: the first answer token's probability moves with the question.
    firsts = set()
    for prompt in (QUESTION, "Is 7 an even number? Answer yes or no.", "Name a colour. One word.",
                   "Is Paris in Germany? Answer yes or no."):
        entry = _chat(real_tiers["device"], prompt, logprobs=True, top_logprobs=5)["choices"][0]["logprobs"]
        firsts.add(round(entry["content"][0]["logprob"], 4))
    assert len(firsts) > 1


def test_a_second_server_on_a_taken_port_is_refused(
    real_tiers: dict[str, RunningTier], real_cache: CacheLayout, tmp_path: Path
) -> None:
    server = ensure_server(real_cache, report=lambda _: None)
    device = real_tiers["device"]
    spec = TierSpec("edge", model_path(lookup("smollm2-135m"), real_cache), device.port)
    with pytest.raises(PortInUseError, match=rf"tier 'edge': port {device.port}"):
        start_tier(server, spec, tmp_path / "run")
    # The running tier is untouched.
    assert httpx.get(f"{device.base_url}/health", timeout=5).status_code == 200


def test_a_tier_that_dies_on_a_corrupt_model_names_itself(real_cache: CacheLayout, tmp_path: Path) -> None:
    server = ensure_server(real_cache, report=lambda _: None)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 4096)
    with pytest.raises(TierStartError) as info:
        start_tier(server, TierSpec("edge", broken, free_port()), tmp_path / "run", health_timeout_s=60)
    message = str(info.value)
    assert "tier 'edge'" in message and "exited with status" in message
    assert str(tmp_path / "run" / "edge.log") in message and "broken.gguf" in message


def test_tiers_up_status_down_command(real_cache: CacheLayout, tmp_path: Path) -> None:
    """The real `recserve tiers` commands on free ports, with their own run folder."""
    ports = [free_port() for _ in REAL_TIERS]
    config = {"tiers": [
        {"name": name, "base_url": f"http://127.0.0.1:{port}/v1", "model": key,
         "local": {"model": key, "port": port, "threads": threads}}
        for (name, key, threads), port in zip(REAL_TIERS, ports, strict=True)
    ]}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {"RECSERVE_RUN_DIR": str(tmp_path / "run"), "RECSERVE_CACHE_DIR": str(real_cache.root)}
    command = [sys.executable, "-m", "gateway.local.commands"]

    def run_tiers(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args, "--config", str(config_path)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **env}, check=False)

    try:
        started = time.monotonic()
        up = run_tiers("up")
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"tiers up (warm cache): {time.monotonic() - started:.1f} s\n{up.stdout}", file=sys.stderr)
        for (name, _, _), port in zip(REAL_TIERS, ports, strict=True):
            assert f"tier '{name}': up on http://127.0.0.1:{port}" in up.stdout
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        again = run_tiers("up")
        assert again.returncode == 0 and again.stdout.count("already running") == 3
        status = run_tiers("status")
        assert status.returncode == 0 and status.stdout.count("healthy") == 3, status.stdout
    finally:
        down = run_tiers("down")
    assert down.returncode == 0 and down.stdout.count("stopped (pid") == 3, down.stdout + down.stderr
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    after = run_tiers("status")
    assert after.returncode == 1 and after.stdout.count(" down ") == 3
