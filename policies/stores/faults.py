"""What a shared-store failure is, decided in one place for every store that talks to Redis.

A window store in trouble must degrade (answer from local windows, count it, try Redis again later),
never fail a request. `fault_kind` says whether an exception is such a failure and which kind, for
the log line and the `kind` label of `recserve_window_store_errors_total`:

- redis-py's whole tree: `RedisError` (connection, timeout, auth, LOADING, READONLY, OOM under
  `noeviction`, NOSCRIPT, BUSY, CLUSTERDOWN, TRYAGAIN, MOVED/ASK left over, ...) and
  `RedisClusterException`, which is *not* a `RedisError` (slots not covered while a cluster forms or
  reshards, no reachable startup node, ...);
- what the operating system and asyncio raise around it: `OSError` (refused, reset, TLS),
  `TimeoutError` (our own per-call budget), `EOFError` (a half-read reply);
- anything else raised from inside redis-py itself, e.g. an `AttributeError` while a cluster
  client's topology is being replaced: a client bug, but the store is still what failed.

Everything else — a `ValueError` from a caller's bad argument, a bug in our own code — is not a
store fault and propagates. `STORE_FAULTS` is the same set as a tuple, for `except` clauses.
"""

from __future__ import annotations

from typing import Final

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

STORE_FAULTS: Final[tuple[type[BaseException], ...]] = (
    RedisError, RedisClusterException, OSError, TimeoutError, EOFError)

# Most specific first: ClusterDownError is a ResponseError, AuthenticationError a ConnectionError,
# the built-in TimeoutError an OSError.
_BY_CLASS: Final[tuple[tuple[tuple[type[BaseException], ...], str], ...]] = (
    ((ClusterDownError,), "cluster_down"),
    ((RedisClusterException, ClusterError, TryAgainError, AskError), "cluster"),
    ((OutOfMemoryError,), "oom"),
    ((ReadOnlyError,), "readonly"),
    ((NoScriptError,), "script"),
    ((AuthenticationError, AuthorizationError, NoPermissionError, AuthenticationWrongNumberOfArgsError), "auth"),
    ((BusyLoadingError,), "loading"),
    ((RedisTimeoutError, TimeoutError), "timeout"),
    ((RedisConnectionError, OSError, EOFError), "connection"),
)

KINDS: Final = ("cluster_down", "cluster", "oom", "readonly", "script", "auth", "loading", "timeout",
                "connection", "busy", "response", "client")


def _response_kind(exc: ResponseError) -> str:
    text = str(exc)
    if text.startswith("BUSY"):
        return "busy"  # another client's script holds the server
    if text.startswith("OOM"):
        return "oom"
    if "script:" in text or "Error running script" in text:
        return "script"  # one of our scripts failed inside Redis (e.g. WRONGTYPE on a foreign key)
    return "response"


def _raised_inside_redis_py(exc: BaseException) -> bool:
    """True when the innermost frame of `exc`'s traceback is redis-py's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == "redis" or module.startswith("redis."))


def fault_kind(exc: BaseException) -> str | None:
    """The kind of store fault `exc` is (one of `KINDS`), or None when it is not a store fault."""
    for classes, kind in _BY_CLASS:
        if isinstance(exc, classes):
            return kind
    if isinstance(exc, ResponseError):
        return _response_kind(exc)
    if isinstance(exc, RedisError):
        return "response"  # InvalidResponse, DataError, PubSubError, ...: the exchange failed
    if isinstance(exc, Exception) and _raised_inside_redis_py(exc):
        return "client"
    return None
