"""Both translated APIs on real models: the official OpenAI and Anthropic SDKs -> `recserve serve`
-> three real llama.cpp tiers. Marked `realmodel` (slow; needs the model cache)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest
from openai import OpenAI

from gateway.local.supervisor import RunningTier
from tests.local.realtiers import REAL_TIERS
from tests.local.test_realmodel_gateway import serve_gateway

pytestmark = pytest.mark.realmodel

QUESTION = "Is the sky blue on a clear day? Answer yes or no."
TIER_NAMES = [name for name, _, _ in REAL_TIERS]


@pytest.fixture(scope="module")
def base_url(real_tier_list: list[RunningTier], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway of this module's own over the session's real tiers (tests/conftest.py)."""
    with serve_gateway(real_tier_list, tmp_path_factory.mktemp("gateway")) as base:
        yield base


def _confident(headers: httpx.Headers) -> None:
    raw = headers.get("x-recserve-confidence")
    assert raw not in (None, "none") and 0.0 < float(raw) <= 1.0, dict(headers)


@pytest.mark.parametrize("name", TIER_NAMES)
def test_responses_pinned_to_each_real_tier(base_url: str, name: str) -> None:
    with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        raw = sdk.responses.with_raw_response.create(model=f"recserve/{name}", input=QUESTION, max_output_tokens=4)
        response = raw.parse()
        # A 4-token budget may end a small model's answer before any visible text: judge the decision.
        assert raw.headers["x-recserve-tier"] == name and response.status in ("completed", "incomplete")
        _confident(raw.headers)
        with sdk.responses.stream(model="recserve", input=QUESTION, max_output_tokens=8) as stream:
            # An answer cut at max_output_tokens ends with response.incomplete, as OpenAI's own API does;
            # the SDK's get_final_response() only accepts response.completed, so read the last event.
            last = [event for event in stream if event.type in ("response.completed", "response.incomplete")][-1]
        final = last.response
        assert final.status in ("completed", "incomplete")
        assert final.model_extra["recserve"]["tier"] in TIER_NAMES  # type: ignore[index]


@pytest.mark.parametrize("name", TIER_NAMES)
def test_messages_pinned_to_each_real_tier(base_url: str, name: str) -> None:
    with anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as claude:
        raw = claude.messages.with_raw_response.create(model=f"recserve/{name}", max_tokens=4,
                                                       messages=[{"role": "user", "content": QUESTION}])
        message = raw.parse()
        assert raw.headers["x-recserve-tier"] == name and message.content
        _confident(raw.headers)
        with claude.messages.stream(model="recserve", max_tokens=8,
                                    messages=[{"role": "user", "content": QUESTION}]) as stream:
            final = stream.get_final_message()
        assert final.content and final.stop_reason in ("end_turn", "max_tokens")
