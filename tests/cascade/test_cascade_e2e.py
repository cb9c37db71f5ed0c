"""The cascade end to end: OpenAI SDK → gateway in uvicorn → scripted tiers over loopback HTTP.
Runs against both backends (plain httpx and litellm), which must behave the same."""

from __future__ import annotations

import math

import numpy as np
import openai
import pytest

from tests.conftest import BOTH_BACKENDS, ask
from tests.support.scripted_tier import ThreadedTier

# Both backends (plain HTTP and litellm) must pass every test here.
pytestmark = BOTH_BACKENDS


def test_cold_start_answers_at_the_device(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    answer, headers = ask(client, "hello [device:0.05]")
    assert headers["x-recserve-tier"] == "device"
    assert headers["x-recserve-path"] == "device"
    assert headers["x-recserve-threshold"] == "none"
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.05)
    assert headers["x-recserve-task"] == "generation"
    assert headers["x-recserve-uplink-tokens"] == "0"
    assert headers["x-request-id"]
    assert answer.model == "device-model"
    assert answer.choices[0].logprobs is None  # not asked for, so not returned
    assert not tiers["edge"].requests


def test_low_confidence_escalates_by_the_window_quantile(client: openai.OpenAI,
                                                         tiers: dict[str, ThreadedTier]) -> None:
    ask(client, "warm up [device:0.9]")
    # Window [0.9, 0.1]: 30th percentile 0.34 > 0.1, so the device offloads to the edge.
    answer, headers = ask(client, "hard one [device:0.1][edge:0.95]")
    assert headers["x-recserve-path"] == "device>edge"
    assert headers["x-recserve-tier"] == "edge"
    assert headers["x-recserve-threshold"] == "none"  # the edge's window was empty: cold start
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.95)
    assert answer.model == "edge-model"
    assert int(headers["x-recserve-uplink-tokens"]) == 3  # the edge's usage.prompt_tokens (3 words)
    assert not tiers["cloud"].requests
    # Window [0.9, 0.1, 0.5]: threshold 0.34 and 0.5 is not below it, so the device keeps this one.
    _, headers = ask(client, "easier [device:0.5]")
    assert headers["x-recserve-path"] == "device"
    assert float(headers["x-recserve-threshold"]) == float(np.percentile([0.9, 0.1, 0.5], 30))


def test_forwarded_request_has_logprobs_on_and_no_extension(client: openai.OpenAI,
                                                            tiers: dict[str, ThreadedTier]) -> None:
    ask(client, "check [device:0.7]", temperature=0.3, max_tokens=7,
        extra_body={"recserve": {"task": "generation"}})
    (seen,) = tiers["device"].requests
    body = seen.json
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert "recserve" not in body
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7
    assert body["model"].endswith("device-model")


def test_logprobs_returned_when_asked_and_trimmed(client: openai.OpenAI) -> None:
    answer, _ = ask(client, "x [device:0.8]", logprobs=True, top_logprobs=1)
    content = answer.choices[0].logprobs.content
    assert len(content) == 1 and content[0].logprob == pytest.approx(math.log(0.8))
    assert len(content[0].top_logprobs) <= 1


def test_pinned_tier_skips_the_cascade(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    answer, headers = ask(client, "pin [cloud:0.01]", model="recserve/cloud")
    assert headers["x-recserve-tier"] == "cloud" and headers["x-recserve-path"] == "cloud"
    assert answer.model == "cloud-model"
    assert not tiers["device"].requests and not tiers["edge"].requests
    assert int(headers["x-recserve-uplink-tokens"]) == 2  # cloud-only ships the prompt up


def test_casserve_uses_fixed_thresholds(client: openai.OpenAI) -> None:
    _, headers = ask(client, "q [device:0.79][edge:0.81]", model="recserve/casserve")
    assert headers["x-recserve-path"] == "device>edge"
    assert headers["x-recserve-threshold"] == "0.8"
    _, headers = ask(client, "q [device:0.79][edge:0.5][cloud:0.4]", model="recserve/casserve")
    assert headers["x-recserve-path"] == "device>edge>cloud"
    assert headers["x-recserve-threshold"] == "none"  # the last tier is never judged


def test_classification_confidence_over_labels(client: openai.OpenAI) -> None:
    _, headers = ask(client, "Review: great! [device:label= Positive:0.6,negative:0.3,neutral:0.1]", max_tokens=1,
                     extra_body={"recserve": {"labels": ["positive", "negative"]}})
    assert headers["x-recserve-task"] == "classification"
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.6 / 0.9)


def test_task_from_header_and_from_short_budget(client: openai.OpenAI) -> None:
    _, headers = ask(client, "x [device:0.5]", max_tokens=3)
    assert headers["x-recserve-task"] == "classification"
    _, headers = ask(client, "x [device:0.5]", extra_headers={"x-recserve-task": "classification"})
    assert headers["x-recserve-task"] == "classification"


def test_request_id_is_echoed(client: openai.OpenAI) -> None:
    _, headers = ask(client, "x", extra_headers={"x-request-id": "trace-42"})
    assert headers["x-request-id"] == "trace-42"


def test_missing_logprobs_escalate_as_no_confidence(client: openai.OpenAI, tiers: dict[str, ThreadedTier]) -> None:
    ask(client, "warm [device:0.9]")
    _, headers = ask(client, "x [device:nologprobs][edge:0.9]")
    assert headers["x-recserve-path"] == "device>edge"  # an answer came back, so no fault mark
    assert headers["x-recserve-tier"] == "edge"


def test_tier_fault_escalates_with_a_marked_path(client: openai.OpenAI) -> None:
    _, headers = ask(client, "x [device:status=500][edge:0.9]")
    assert headers["x-recserve-path"] == "device!>edge"
    assert headers["x-recserve-tier"] == "edge"


def test_tier_rejecting_the_request_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "x [device:status=400]")
    assert caught.value.status_code == 400
    assert "scripted 400" in caught.value.message


def test_completions_endpoint_both_layouts(client: openai.OpenAI) -> None:
    for prompt, expected in (("legacy [device:0.6]", 0.6), ("llama [device:0.7][device:llamacpp]", 0.7)):
        raw = client.completions.with_raw_response.create(model="recserve/device", prompt=prompt, max_tokens=8)
        assert float(raw.headers["x-recserve-confidence"]) == pytest.approx(expected)
        assert raw.parse().choices[0].logprobs is None
