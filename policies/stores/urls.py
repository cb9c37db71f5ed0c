"""Turn `windows.redis_url` into a `redis.asyncio` client with short timeouts.

Accepted forms (query parameters are optional; see `QUERY_PARAMETERS`):

    redis://[[user]:password@]host[:6379][/db]              plain TCP
    rediss://[[user]:password@]host[:6379][/db]             TLS (ssl_ca_certs=..., ssl_cert_reqs=...)
    unix://[[user]:password@]/path/to/redis.sock[?db=N]     Unix domain socket
    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/service_name[/db]
    rediss+sentinel://...                                   Sentinel, TLS to the master
    redis+cluster://[[user]:password@]host1[:6379][,host2[:6379]...][/0]
    rediss+cluster://...                                    Redis Cluster (TLS to every node)

For Redis Cluster the hosts are startup nodes: any reachable one discovers the others, and they stay
the ones asked on every topology refresh (not the node addresses the cluster reported): a cluster
whose nodes came back at new addresses under the same names (pods rescheduled) is found again. Every
script the stores run touches keys of one hash tag, hence one slot, as the cluster requires.

For Sentinel, the user and password authenticate against the Redis master; the sentinels take
`sentinel_username` / `sentinel_password` query parameters when they require their own AUTH.

Timeouts default to half a second; `socket_timeout` and `socket_connect_timeout` in the query
override them. `socket_timeout` is also the whole budget of one call on the request path
(`RedisConnection.timeout_s`): a timed-out call is not retried (a frozen Redis would double the
wait), only a connection that broke is, once, on a fresh socket. Building a client never touches
the network: connections open lazily.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_SOCKET_TIMEOUT_S: Final = 0.5
DEFAULT_CONNECT_TIMEOUT_S: Final = 0.5
DEFAULT_SENTINEL_PORT: Final = 26379
DEFAULT_REDIS_PORT: Final = 6379

SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
                  "rediss+cluster")


def _to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be > 0: {value!r}")
    return number


# Query parameters we accept, with their parsers. An unknown parameter is a configuration error
# caught at startup, not a TypeError on the first connection in the middle of traffic.
QUERY_PARAMETERS: Final[Mapping[str, Callable[[str], Any]]] = {
    "socket_timeout": _positive_float,
    "socket_connect_timeout": _positive_float,
    "db": int,
    "client_name": str,
    "max_connections": int,
    "health_check_interval": int,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": _to_bool,
    "sentinel_username": str,
    "sentinel_password": str,
}
_SENTINEL_ONLY: Final = ("sentinel_username", "sentinel_password")
_TLS_ONLY: Final = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A parsed `redis+cluster://` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """A client plus whatever must be closed with it (the sentinel clients, for Sentinel URLs)."""

    client: Redis
    url: str  # redacted, safe to log
    sentinel: Sentinel | None = None
    timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S  # the budget of one call, retries included

    async def close(self) -> None:
        """Close the client's pool and, for Sentinel, the connections to the sentinels."""
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


@dataclass(frozen=True, slots=True)
class ClusterConnection:
    """A Redis Cluster client (it keeps one pool per node and follows failovers itself)."""

    client: RedisCluster
    url: str  # redacted, safe to log
    timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S

    async def close(self) -> None:
        await self.client.aclose()


# Both expose what the stores use: register_script, hget/hset/hgetall/hdel, delete, scan_iter, pubsub.
RedisClient = Redis | RedisCluster
AnyConnection = RedisConnection | ClusterConnection


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"redis_url must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    return scheme.lower()


def redact_url(url: str) -> str:
    """The URL with its password (and any `*password*` query value) replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        # `redis://secret@host` is a username to redis-py, but people do write passwords there.
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    redacted = f"{scheme}://{netloc}{slash}{tail}"
    return re.sub(r"((?:^|[?&])[^=&]*password[^=&]*=)[^&]*", r"\1***", redacted, flags=re.IGNORECASE)


def _query_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        parser = QUERY_PARAMETERS.get(name)
        if parser is None:
            known = ", ".join(sorted(QUERY_PARAMETERS))
            raise ValueError(f"unknown redis_url query parameter {name!r} (known: {known})")
        try:
            options[name] = parser(values[-1])
        except ValueError as exc:
            raise ValueError(f"bad value for redis_url query parameter {name!r}: {exc}") from None
    return options


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, after = text[1:].partition("]")
        port_text = after.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"empty host in {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return unquote(host), port


@dataclass(frozen=True, slots=True)
class _MultiHostUrl:
    """`scheme://[[user]:password@]h1[:p1][,h2[:p2]...][/path][?query]`, split up."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    path: str
    options: dict[str, Any]
    username: str | None
    password: str | None


def _split_multi_host(url: str, kind: str, default_port: int) -> _MultiHostUrl:
    scheme = scheme_of(url)
    if not scheme.endswith("+" + kind):
        raise ValueError(f"not a redis+{kind}:// URL")
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(part, default_port) for part in netloc.split(",") if part.strip())
    if not hosts:
        raise ValueError(f"a redis+{kind}:// URL needs at least one {kind} host")
    return _MultiHostUrl(scheme, hosts, path, _query_options(query), username, password)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse `redis+sentinel://[[user]:password@]h1[:p1][,h2[:p2]...]/service_name[/db][?query]`."""
    parts = _split_multi_host(url, "sentinel", DEFAULT_SENTINEL_PORT)
    segments = [unquote(segment) for segment in parts.path.split("/") if segment]
    if not segments or len(segments) > 2:
        raise ValueError("a redis+sentinel:// URL's path is /service_name or /service_name/db")
    options = parts.options
    db = int(segments[1]) if len(segments) == 2 else int(options.pop("db", 0))
    options.pop("db", None)
    return SentinelTarget(parts.hosts, segments[0], db, parts.username, parts.password,
                          parts.scheme.startswith("rediss"), options)


def parse_cluster_url(url: str) -> ClusterTarget:
    """Parse `redis+cluster://[[user]:password@]h1[:p1][,h2[:p2]...][/0][?query]`."""
    parts = _split_multi_host(url, "cluster", DEFAULT_REDIS_PORT)
    options = parts.options
    db = parts.path.strip("/") or str(options.pop("db", 0))
    options.pop("db", None)
    if db != "0":
        raise ValueError("Redis Cluster has only database 0 (leave the path empty or write /0)")
    misplaced = [name for name in options if name in _SENTINEL_ONLY]
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)} only apply to redis+sentinel:// URLs")
    return ClusterTarget(parts.hosts, parts.username, parts.password, parts.scheme.startswith("rediss"), options)


def _no_retry_storm() -> Retry:
    # One immediate retry on a fresh connection rides over a pooled socket that a Redis restart
    # closed. A timeout is not retried: a frozen Redis would make every call wait twice. Anything
    # longer is the failover store's job (it backs off and answers locally).
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def connect(url: str, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
            socket_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> RedisConnection:
    """Build (without connecting) a client for a single Redis (plain, TLS, unix, Sentinel) URL."""
    connection = connect_any(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout)
    if isinstance(connection, ClusterConnection):
        raise ValueError("a redis+cluster:// URL needs connect_any(), not connect()")
    return connection


def connect_any(url: str, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
                socket_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> AnyConnection:
    """Build (without connecting) a client for any of the URL forms in this module's docstring."""
    scheme = scheme_of(url)
    defaults: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": _no_retry_storm(),
    }
    if scheme.endswith("+sentinel"):
        return _connect_sentinel(parse_sentinel_url(url), url, defaults)
    if scheme.endswith("+cluster"):
        return _connect_cluster(parse_cluster_url(url), url, defaults)
    query = urlsplit(url).query
    options = _query_options(query)
    misplaced = [name for name in options if name in _SENTINEL_ONLY]
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)} only apply to redis+sentinel:// URLs")
    if scheme != "rediss" and any(name in _TLS_ONLY for name in options):
        raise ValueError("ssl_* parameters only apply to rediss:// URLs")
    # redis-py parses host, port, db, user and password itself; query values win over our defaults.
    client: Redis = Redis.from_url(url, **defaults)
    return RedisConnection(client, redact_url(url), timeout_s=options.get("socket_timeout", socket_timeout))


def _connect_cluster(target: ClusterTarget, url: str, defaults: dict[str, Any]) -> ClusterConnection:
    options = dict(target.options)
    if not target.tls and any(name in _TLS_ONLY for name in options):
        raise ValueError("ssl_* parameters only apply to rediss+cluster:// URLs")
    kwargs: dict[str, Any] = {**defaults, **options}
    if target.tls:
        kwargs["ssl"] = True
    # dynamic_startup_nodes=False: redis-py would otherwise replace the URL's hosts with the addresses
    # the first topology named, and never find a cluster that later came back elsewhere.
    client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                          username=target.username, password=target.password, dynamic_startup_nodes=False,
                          **kwargs)
    return ClusterConnection(client, redact_url(url), kwargs["socket_timeout"])


def _connect_sentinel(target: SentinelTarget, url: str, defaults: dict[str, Any]) -> RedisConnection:
    options = dict(target.options)
    sentinel_auth = {
        "username": options.pop("sentinel_username", None),
        "password": options.pop("sentinel_password", None),
    }
    timeouts = {name: options.get(name, defaults[name])
                for name in ("socket_timeout", "socket_connect_timeout")}
    master_kwargs: dict[str, Any] = {**defaults, **options}
    if not target.tls and any(name in _TLS_ONLY for name in options):
        raise ValueError("ssl_* parameters only apply to rediss+sentinel:// URLs")
    if target.tls:
        master_kwargs["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # untyped in older redis-py
        list(target.sentinels),
        sentinel_kwargs={**timeouts, "retry": _no_retry_storm(),
                         **{k: v for k, v in sentinel_auth.items() if v is not None}},
        **master_kwargs,
    )
    client: Redis = sentinel.master_for(target.service_name, db=target.db, username=target.username,
                                        password=target.password)
    return RedisConnection(client, redact_url(url), sentinel, timeouts["socket_timeout"])
