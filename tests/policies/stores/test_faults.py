"""The one map of store faults: every exception in redis-py's tree is a store fault, an error raised
inside redis-py is one too, and our own bugs are not (they propagate instead of failing over)."""

from __future__ import annotations

import inspect
import math

import pytest
import redis.exceptions
from redis.crc import key_slot

from policies.base import WindowKey
from policies.stores.failover import FailoverWindowStore
from policies.stores.faults import KINDS, STORE_FAULTS, fault_kind
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import connect

KEY = WindowKey("recserve", "device", "classification")


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, redis.exceptions.AskError):  # parses its "slot host:port" message
        return cls("1234 127.0.0.1:7000")
    return cls("some message")


def _redis_py_tree() -> list[type[BaseException]]:
    roots = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)
    return [cls for _, cls in inspect.getmembers(redis.exceptions, inspect.isclass) if issubclass(cls, roots)]


@pytest.mark.parametrize("cls", _redis_py_tree(), ids=lambda cls: cls.__name__)
def test_every_class_of_redis_pys_tree_is_a_store_fault(cls: type[BaseException]) -> None:
    error = _instance(cls)
    assert isinstance(error, STORE_FAULTS)
    assert fault_kind(error) in KINDS


def test_the_kinds_name_what_went_wrong() -> None:
    e = redis.exceptions
    expected = {
        e.RedisClusterException("All slots are not covered after query all startup_nodes."): "cluster",
        e.SlotNotCoveredError('Slot "1" is not covered by the cluster.'): "cluster",
        e.ClusterDownError("CLUSTERDOWN The cluster is down"): "cluster_down",
        e.MasterDownError("MASTERDOWN Link with MASTER is down"): "cluster_down",
        e.TryAgainError("Multiple keys request during rehashing of slot"): "cluster",
        e.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."): "oom",
        e.ReadOnlyError("You can't write against a read only replica."): "readonly",
        e.NoScriptError("No matching script."): "script",
        e.ResponseError("WRONGTYPE Operation against a key ... script: 89ab, on @user_script:5."): "script",
        e.ResponseError("BUSY Redis is busy running a script."): "busy",
        e.AuthenticationError("invalid username-password pair"): "auth",
        e.NoPermissionError("this user has no permissions to run the 'evalsha' command"): "auth",
        e.BusyLoadingError("Redis is loading the dataset in memory"): "loading",
        e.TimeoutError("Timeout reading from socket"): "timeout",
        TimeoutError("Redis window store: no answer within 0.5s"): "timeout",
        e.ConnectionError("Error 111 connecting to 127.0.0.1:6379."): "connection",
        ConnectionRefusedError(111, "Connection refused"): "connection",
        e.MaxConnectionsError("Too many connections"): "connection",
        e.ResponseError("ERR unknown command"): "response",
        e.InvalidResponse("Protocol error"): "response",
    }
    assert {str(error): fault_kind(error) for error in expected} == {str(k): v for k, v in expected.items()}


def test_an_error_raised_inside_redis_py_is_a_client_fault() -> None:
    """redis-py itself raising something outside its tree (an AttributeError on a half-replaced
    cluster topology, say) is still the store failing."""
    with pytest.raises(AttributeError) as raised:
        key_slot(None)  # type: ignore[arg-type]  # redis-py's own code, given what it cannot handle
    assert fault_kind(raised.value) == "client"


def test_our_own_bugs_are_not_store_faults() -> None:
    assert fault_kind(ValueError("confidence must be finite")) is None
    assert fault_kind(KeyError("x")) is None


async def test_a_caller_bug_propagates_and_is_not_counted() -> None:
    connection = connect("redis://127.0.0.1:1/0")  # never reached: the argument is refused first
    try:
        store = FailoverWindowStore(RedisWindowStore(connection.client, "bug"), MemoryWindowStore())
        with pytest.raises(ValueError, match="finite"):
            await store.step(KEY, math.nan, 10, 0.3)
        assert store.error_count == 0 and not store.degraded
    finally:
        await connection.close()
