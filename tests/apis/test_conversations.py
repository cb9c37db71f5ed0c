"""Stored conversations: continued on another replica through a shared real redis-server, expired
by Redis's TTL; the memory store's expiry and bound."""

from __future__ import annotations

import time

import openai
import pytest

from gateway.apis.responses.store import MemoryConversations, StoredResponse
from tests.conftest import GatewayStarter
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier


def test_previous_response_id_on_another_replica(start_gateway: GatewayStarter, redis_server: RedisServer,
                                                 tiers: dict[str, ThreadedTier]) -> None:
    shared = {"windows": {"store": "redis", "redis_url": redis_server.url, "namespace": "conv-test"}}
    first, second = start_gateway(shared), start_gateway(shared)
    with first.sdk() as one, second.sdk() as two:
        opening = one.responses.create(model="recserve", input="my name is Ada")
        continued = two.responses.create(model="recserve", input="what is my name?",
                                         previous_response_id=opening.id)
        assert tiers["device"].requests[-1].json["messages"] == [
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "device answer"},
            {"role": "user", "content": "what is my name?"},
        ]
        assert two.responses.retrieve(opening.id).output_text == opening.output_text
        with one.responses.stream(model="recserve", input="and then?", previous_response_id=continued.id) as stream:
            streamed = stream.get_final_response()
        assert len(tiers["device"].requests[-1].json["messages"]) == 5
        two.responses.delete(streamed.id)
        with pytest.raises(openai.NotFoundError):
            one.responses.retrieve(streamed.id)


def test_redis_ttl_expires_stored_responses(start_gateway: GatewayStarter, redis_server: RedisServer) -> None:
    gateway = start_gateway({"windows": {"store": "redis", "redis_url": redis_server.url, "namespace": "ttl-test"},
                             "conversations": {"ttl_s": 0.2}})
    with gateway.sdk() as sdk:
        response = sdk.responses.create(model="recserve", input="x")
        assert sdk.responses.retrieve(response.id).id == response.id
        time.sleep(0.4)
        with pytest.raises(openai.NotFoundError) as expired:
            sdk.responses.create(model="recserve", input="y", previous_response_id=response.id)
    assert expired.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


async def test_memory_store_expires_and_stays_bounded() -> None:
    now = [0.0]
    store = MemoryConversations(ttl_s=10, max_entries=2, clock=lambda: now[0])
    record = StoredResponse({"id": "a"}, [])
    for name in ("a", "b", "c"):
        await store.put("", name, record)
    assert await store.get("", "a") is None and await store.get("", "b") == record  # the oldest went first
    assert await store.get("team-a", "b") is None  # another tenant's lookup misses
    now[0] = 10.0
    assert await store.get("", "b") is None and not await store.delete("", "c")
