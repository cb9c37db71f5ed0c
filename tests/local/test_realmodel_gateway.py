"""End to end on real models: the official OpenAI SDK -> `recserve serve` -> three real llama.cpp tiers.

Marked `realmodel`. Tiers and gateway run as real processes on free loopback ports, in their own
run folder (the PID files of tiers started by `make run` are never touched).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from gateway.local.catalog import lookup
from gateway.local.models import model_path
from gateway.local.paths import CacheLayout, default_layout
from gateway.local.proc import tail
from gateway.local.server_build import ensure_server
from gateway.local.supervisor import RunningTier, TierSpec, start_tier, stop
from tests.local.realtiers import REAL_TIERS, boolq_questions, free_port
from tests.support.processes import stop as stop_process

pytestmark = pytest.mark.realmodel

TIER_NAMES = [name for name, _, _ in REAL_TIERS]
PROMPTS = (
    "Is the sky blue on a clear day? Answer yes or no.",
    "Is 7 an even number? Answer yes or no.",
    "Is Paris the capital of Germany? Answer yes or no.",
    "Do fish live in water? Answer yes or no.",
)
# Prompts every tier continues with a non-empty answer (SmolLM2 ends a bare "Q: ...\nA:" at once).
COMPLETION_PROMPTS = ("The capital of France is", "2 + 2 =", "Question: Do fish live in water?\nAnswer (yes or no):")
QUESTIONS = 40


@pytest.fixture(scope="module")
def real_cache() -> CacheLayout:
    return default_layout()


@pytest.fixture(scope="module")
def real_tiers(real_tier_list: list[RunningTier]) -> list[RunningTier]:
    """The session's real tiers (tests/conftest.py), started once for every real-model module."""
    return real_tier_list


@contextmanager
def serve_gateway(tiers: list[RunningTier], folder: Path, **tier_options: Any) -> Iterator[str]:
    """`recserve serve` (the console script) on a free port over `tiers` (each with `tier_options`);
    yields its base URL."""
    port = free_port()
    models = {name: key for name, key, _ in REAL_TIERS}
    config = {
        "server": {"host": "127.0.0.1", "port": port, "request_timeout_s": 120},
        "auth": {"api_keys_env": None, "admin_key_env": None},
        "tiers": [
            {"name": t.name, "base_url": f"{t.base_url}/v1", "model": models[t.name], "timeout_s": 60,
             "max_concurrency": 1, "queue_timeout_s": 30, **tier_options}
            for t in tiers
        ],
        "policy": {"default": "recserve", "recserve": {"beta": 0.3, "window": 10000}},
        "confidence": {"top_logprobs": 5},
        "windows": {"store": "memory"},
    }
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = folder / "gateway.log"
    recserve = Path(sys.executable).parent / "recserve"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(recserve), "serve", "--config", str(config_path), "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log_path)
        yield base
    finally:
        stop_process(process, 20)
        print(f"gateway log ({log_path}), tail:\n{tail(log_path, 15)}", file=sys.stderr)


@pytest.fixture(scope="module")
def real_gateway(real_tiers: list[RunningTier], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway over the three real tiers, for the whole module."""
    with serve_gateway(real_tiers, tmp_path_factory.mktemp("gateway")) as base:
        yield base


def _wait_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"recserve serve exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"recserve serve not ready after 60 s:\n{tail(log_path)}")


@pytest.fixture(scope="module")
def real_client(real_gateway: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{real_gateway}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def _confidence(headers: Mapping[str, str]) -> float:
    raw = headers.get("x-recserve-confidence")
    assert raw not in (None, "none"), f"no confidence parsed: {dict(headers)}"
    value = float(raw)
    assert 0.0 < value <= 1.0, value
    return value


def test_models_lists_policies_and_pins(real_client: OpenAI) -> None:
    ids = {model.id for model in real_client.models.list()}
    assert {"recserve", *(f"recserve/{name}" for name in TIER_NAMES)} <= ids


@pytest.mark.parametrize("name", TIER_NAMES)
def test_pinned_chat_reaches_that_tier_with_real_logprobs(real_client: OpenAI, name: str) -> None:
    confidences = []
    for prompt in PROMPTS:
        raw = real_client.chat.completions.with_raw_response.create(
            model=f"recserve/{name}", messages=[{"role": "user", "content": prompt}],
            max_tokens=3, temperature=0, logprobs=True, top_logprobs=3,
        )
        assert raw.headers["x-recserve-tier"] == name
        assert raw.headers["x-recserve-path"] == name
        confidences.append(_confidence(raw.headers))
        completion = raw.parse()
        assert completion.choices[0].message.content is not None
        logprobs = completion.choices[0].logprobs
        assert logprobs is not None and logprobs.content
        assert all(len(token.top_logprobs) <= 3 for token in logprobs.content)
    assert len(set(confidences)) > 1, f"{name}: confidence constant across prompts: {confidences}"


@pytest.mark.parametrize("name", TIER_NAMES)
def test_pinned_completions_parse_llama_cpp_logprobs(real_client: OpenAI, name: str) -> None:
    confidences = []
    for prompt in COMPLETION_PROMPTS:
        raw = real_client.completions.with_raw_response.create(
            model=f"recserve/{name}", prompt=prompt, max_tokens=3, temperature=0, logprobs=2,
        )
        assert raw.headers["x-recserve-tier"] == name
        confidences.append(_confidence(raw.headers))
        assert raw.parse().choices[0].text is not None
    assert len(set(confidences)) > 1, f"{name}: confidence constant across prompts: {confidences}"


def test_no_logprobs_returned_unless_asked(real_client: OpenAI) -> None:
    raw = real_client.chat.completions.with_raw_response.create(
        model="recserve/device", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=3,
    )
    _confidence(raw.headers)  # the gateway still asked the tier for logprobs
    assert raw.parse().choices[0].logprobs is None


def test_cascade_over_real_questions_answers_at_device_and_escalates(
    real_client: OpenAI, real_cache: CacheLayout
) -> None:
    questions = boolq_questions(real_cache, QUESTIONS)
    finals: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for item in questions:
        prompt = f"Answer with yes or no only.\nQuestion: {item.question}"
        raw = real_client.chat.completions.with_raw_response.create(
            model="recserve",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=2, temperature=0,
            extra_body={"recserve": {"task": "classification", "labels": ["yes", "no"]}},
        )
        tier, path = raw.headers["x-recserve-tier"], raw.headers["x-recserve-path"]
        assert raw.headers["x-recserve-task"] == "classification"
        finals[tier] += 1
        paths[path] += 1
        answer = (raw.parse().choices[0].message.content or "").strip().lower()
        correct[tier] += answer.startswith(item.answer)
        records.append({"path": path, "confidence": raw.headers["x-recserve-confidence"],
                        "threshold": raw.headers["x-recserve-threshold"]})
    print(f"\nfinal tiers {dict(finals)}; paths {dict(paths)}; correct per final tier {dict(correct)}",
          file=sys.stderr)
    answered_at_device = paths["device"]
    escalated = sum(count for path, count in paths.items() if path.startswith("device>"))
    assert answered_at_device > 0, records
    assert escalated > 0, records
    assert answered_at_device + escalated == len(questions)


def test_a_device_tier_that_dies_is_a_fault_and_the_request_escalates(
    real_tiers: list[RunningTier], real_cache: CacheLayout, tmp_path: Path
) -> None:
    """Its own device tier and gateway (edge and cloud shared): kill the device, the cascade goes on."""
    server = ensure_server(real_cache, report=lambda _: None)
    device_model = model_path(lookup("smollm2-135m"), real_cache)
    run_dir = tmp_path / "run"
    device = start_tier(server, TierSpec("device", device_model, free_port()), run_dir)
    try:
        with serve_gateway([device, *real_tiers[1:]], tmp_path) as base, \
                OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
            before = sdk.chat.completions.with_raw_response.create(
                model="recserve", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=3)
            assert before.headers["x-recserve-path"] == "device"  # cold start: answered at device
            assert device.process is not None
            device.process.kill()  # dies without warning, as a crashed server would
            device.process.wait(timeout=10)
            after = sdk.chat.completions.with_raw_response.create(
                model="recserve", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=3)
            assert after.headers["x-recserve-path"].startswith("device!>edge"), dict(after.headers)
            assert after.headers["x-recserve-tier"] in ("edge", "cloud")
            assert after.parse().choices[0].message.content
    finally:
        stop(device, run_dir)
