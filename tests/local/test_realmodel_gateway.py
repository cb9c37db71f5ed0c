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
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from gateway.local.paths import CacheLayout, default_layout
from gateway.local.proc import tail
from gateway.local.supervisor import RunningTier, stop
from tests.local.realtiers import REAL_TIERS, boolq_questions, free_port, start_real_tiers

pytestmark = pytest.mark.realmodel

TIER_NAMES = [name for name, _, _ in REAL_TIERS]
PROMPTS = (
    "Is the sky blue on a clear day? Answer yes or no.",
    "Is 7 an even number? Answer yes or no.",
    "Is Paris the capital of Germany? Answer yes or no.",
    "Do fish live in water? Answer yes or no.",
)
QUESTIONS = 40


@pytest.fixture(scope="module")
def cache() -> CacheLayout:
    return default_layout()


@pytest.fixture(scope="module")
def tiers(cache: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningTier]]:
    run_dir = tmp_path_factory.mktemp("tiers-run")
    started = start_real_tiers(cache, run_dir, report=lambda line: print(line, file=sys.stderr))
    yield started
    for tier in started:
        stop(tier, run_dir)


@pytest.fixture(scope="module")
def gateway(tiers: list[RunningTier], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`recserve serve` (the console script) on a free port, configured with the three real tiers."""
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    models = {name: key for name, key, _ in REAL_TIERS}
    config = {
        "server": {"host": "127.0.0.1", "port": port, "request_timeout_s": 120},
        "auth": {"api_keys_env": None, "admin_key_env": None},
        "tiers": [
            {"name": t.name, "base_url": f"{t.base_url}/v1", "model": models[t.name], "timeout_s": 60,
             "max_concurrency": 1, "queue_timeout_s": 30}
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
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        print(f"gateway log ({log_path}), tail:\n{tail(log_path, 15)}", file=sys.stderr)


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
def client(gateway: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def _confidence(headers: Mapping[str, str]) -> float:
    raw = headers.get("x-recserve-confidence")
    assert raw not in (None, "none"), f"no confidence parsed: {dict(headers)}"
    value = float(raw)
    assert 0.0 < value <= 1.0, value
    return value


def test_models_lists_policies_and_pins(client: OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"recserve", *(f"recserve/{name}" for name in TIER_NAMES)} <= ids


@pytest.mark.parametrize("name", TIER_NAMES)
def test_pinned_chat_reaches_that_tier_with_real_logprobs(client: OpenAI, name: str) -> None:
    confidences = []
    for prompt in PROMPTS:
        raw = client.chat.completions.with_raw_response.create(
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
def test_pinned_completions_parse_llama_cpp_logprobs(client: OpenAI, name: str) -> None:
    confidences = []
    for prompt in PROMPTS[:3]:
        raw = client.completions.with_raw_response.create(
            model=f"recserve/{name}", prompt=f"Q: {prompt}\nA:", max_tokens=3, temperature=0, logprobs=2,
        )
        assert raw.headers["x-recserve-tier"] == name
        confidences.append(_confidence(raw.headers))
        assert raw.parse().choices[0].text is not None
    assert len(set(confidences)) > 1, f"{name}: confidence constant across prompts: {confidences}"


def test_no_logprobs_returned_unless_asked(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="recserve/device", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=3,
    )
    _confidence(raw.headers)  # the gateway still asked the tier for logprobs
    assert raw.parse().choices[0].logprobs is None


def test_cascade_over_real_questions_answers_at_device_and_escalates(
    client: OpenAI, cache: CacheLayout
) -> None:
    questions = boolq_questions(cache, QUESTIONS)
    finals: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for item in questions:
        prompt = f"Answer with yes or no only.\nQuestion: {item.question}"
        raw = client.chat.completions.with_raw_response.create(
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
