"""Stored Responses (`store: true`), so `previous_response_id` can continue a conversation on any replica.

Kept where the windows are: in process with `windows.store: memory`, in Redis with a TTL (under the
windows' namespace) with `windows.store: redis`, so every replica that shares the windows also
shares the conversations. A record is the Response object the client got plus the conversation so
far as chat messages, the form tiers are asked in.

Records belong to the tenant that stored them: each is kept under its tenant's scope and the id
(`record_key`), so another tenant's lookup is the same lookup as of an id never stored — the same
miss, the same 404, on the same code path.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import jsonio
from gateway.config.schema import ConversationsConfig, WindowsConfig
from gateway.errors import GatewayError
from policies.stores.faults import STORE_FAULTS as REDIS_UNAVAILABLE
from policies.stores.urls import RedisClient, connect_any

log = logging.getLogger("recserve.conversations")


class ConversationsUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "conversation_store_unavailable"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object as the client received it
    messages: list[dict[str, Any]]  # the conversation up to and including this answer, as chat messages


def record_key(owner: str, response_id: str) -> str:
    """Where `owner`'s (a tenant's scope, gateway/config/tenants.py) record of `response_id` is kept.
    `~` is in no tenant's name, so no tenant's key spells another's; an open gateway's ("") keeps
    the plain id."""
    return f"{owner}~{response_id}" if owner else response_id


class ConversationStore(Protocol):
    """Remembers stored responses for a while, each for the tenant that stored it; any replica
    sharing the store may read them."""

    async def put(self, owner: str, response_id: str, record: StoredResponse) -> None: ...

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """`owner`'s record, or None when it is unknown, another tenant's or has expired."""
        ...

    async def delete(self, owner: str, response_id: str) -> bool:
        """True when `owner` had a record to delete."""
        ...


class MemoryConversations:
    """Process-local records, dropped after `ttl_s` and, beyond `max_entries`, oldest first."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, StoredResponse]] = OrderedDict()

    async def put(self, owner: str, response_id: str, record: StoredResponse) -> None:
        key = record_key(owner, response_id)
        self._records[key] = (self._clock() + self._ttl_s, record)
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        key = record_key(owner, response_id)
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._records[key]
            return None
        return entry[1]

    async def delete(self, owner: str, response_id: str) -> bool:
        entry = self._records.pop(record_key(owner, response_id), None)
        return entry is not None and entry[0] > self._clock()


class RedisConversations:
    """Records as JSON strings with a Redis TTL; a Redis outage is a 503 on reads and a logged miss
    on writes (the answer itself is still served)."""

    def __init__(self, client: RedisClient, namespace: str, ttl_s: float) -> None:
        self._client = client
        self._prefix = f"{namespace}:response:"
        self._ttl_ms = max(int(ttl_s * 1000), 1)

    async def put(self, owner: str, response_id: str, record: StoredResponse) -> None:
        data = jsonio.dumps({"response": record.response, "messages": record.messages})
        try:
            await self._client.set(self._prefix + record_key(owner, response_id), data, px=self._ttl_ms)
        except REDIS_UNAVAILABLE as exc:
            log.warning("response %s not stored: conversation store unreachable (%s)", response_id, exc)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        try:
            data = await self._client.get(self._prefix + record_key(owner, response_id))
        except REDIS_UNAVAILABLE:
            raise ConversationsUnavailable("The conversation store is unreachable; try again shortly.") from None
        if data is None:
            return None
        decoded = jsonio.loads(data)
        return StoredResponse(decoded["response"], decoded["messages"])

    async def delete(self, owner: str, response_id: str) -> bool:
        try:
            return bool(await self._client.delete(self._prefix + record_key(owner, response_id)))
        except REDIS_UNAVAILABLE:
            raise ConversationsUnavailable("The conversation store is unreachable; try again shortly.") from None


@dataclass(frozen=True, slots=True)
class Conversations:
    store: ConversationStore
    close: Callable[[], Awaitable[None]]


async def _nothing_to_close() -> None:
    return None


def build_conversations(windows: WindowsConfig, settings: ConversationsConfig) -> Conversations:
    """The store beside the windows `windows:` configures; nothing connects until first use."""
    if windows.store == "redis":
        connection = connect_any(windows.redis_url)  # any URL form, Redis Cluster too
        return Conversations(RedisConversations(connection.client, windows.namespace, settings.ttl_s),
                             connection.close)
    return Conversations(MemoryConversations(settings.ttl_s, settings.max_entries), _nothing_to_close)
