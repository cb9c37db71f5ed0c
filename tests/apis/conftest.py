"""Fixtures the API tests share: a gateway streaming in the `mode` a test is parametrized with."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import GatewayStarter, RunningGateway


@pytest.fixture
def streaming_gateway(start_gateway: GatewayStarter, mode: str) -> RunningGateway:
    return start_gateway({"streaming": {"mode": mode, "decide_after_tokens": 2}})


@pytest.fixture
def streaming_client(streaming_gateway: RunningGateway) -> Iterator[openai.OpenAI]:
    with streaming_gateway.sdk() as sdk:
        yield sdk
