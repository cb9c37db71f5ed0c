"""Every `windows.redis_url` form, against real servers where this machine can run them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AuthenticationError

from policies.base import WindowKey
from policies.stores.urls import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_SOCKET_TIMEOUT_S,
    SentinelTarget,
    connect,
    parse_sentinel_url,
    redact_url,
)
from tests.support.redis_procs import RedisServer, make_tls_files, patient_store

from .conftest import ServerFactory

KEY = WindowKey("recserve", "device", "classification")


async def _round_trip(url: str) -> None:
    connection = connect(url)
    try:
        store = patient_store(connection.client, "urls")
        await store.reset(KEY)
        await store.step(KEY, 0.2, 10, 0.5)
        assert (await store.step(KEY, 0.4, 10, 0.5)).length == 2
        await store.reset(KEY)
    finally:
        await connection.close()


async def test_redis_tcp(redis_server: RedisServer) -> None:
    await _round_trip(redis_server.url)


async def test_short_timeouts_by_default_and_overridable_in_the_query(redis_server: RedisServer) -> None:
    plain = connect(redis_server.url)
    tuned = connect(redis_server.url + "?socket_timeout=2.5&socket_connect_timeout=0.25")
    try:
        kwargs = plain.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT_S
        assert kwargs["socket_connect_timeout"] == DEFAULT_CONNECT_TIMEOUT_S
        tuned_kwargs = tuned.client.connection_pool.connection_kwargs
        assert (tuned_kwargs["socket_timeout"], tuned_kwargs["socket_connect_timeout"]) == (2.5, 0.25)
    finally:
        await plain.close()
        await tuned.close()


async def test_password_and_acl_user(redis_factory: ServerFactory) -> None:
    server = redis_factory(extra_args=["--requirepass", "s3cr#t"])
    port = server.port
    await _round_trip(f"redis://:s3cr%23t@127.0.0.1:{port}/2")  # percent-encoded '#'
    admin = connect(f"redis://:s3cr%23t@127.0.0.1:{port}/0")
    try:
        await admin.client.acl_setuser("gateway", enabled=True, passwords=["+app-pw"], keys=["*"],
                                       commands=["+@all"])
    finally:
        await admin.close()
    await _round_trip(f"redis://gateway:app-pw@127.0.0.1:{port}/0")
    wrong = connect(f"redis://:nope@127.0.0.1:{port}/0")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.client.ping()
    finally:
        await wrong.close()


async def test_unix_socket(redis_factory: ServerFactory) -> None:
    server = redis_factory(unix_socket=True)
    assert server.url.startswith("unix:///")
    await _round_trip(server.url)
    await _round_trip(server.url + "?db=3")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make certificates")
async def test_rediss_tls(redis_factory: ServerFactory, tmp_path: Path) -> None:
    server = redis_factory(tls=make_tls_files(tmp_path))
    assert server.url.startswith("rediss://localhost:")
    await _round_trip(server.url)
    # Without our CA the certificate is rejected: TLS is really on and verified.
    untrusted = connect(f"rediss://localhost:{server.port}/0")
    try:
        with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
            await untrusted.client.ping()
    finally:
        await untrusted.close()


def test_rediss_parsing() -> None:
    connection = connect("rediss://:pw@cache.internal:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required")
    kwargs = connection.client.connection_pool.connection_kwargs
    assert connection.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 1)
    assert kwargs["password"] == "pw"
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert connection.url == "rediss://:***@cache.internal:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"


async def test_sentinel(redis_factory: ServerFactory, redis_server: RedisServer) -> None:
    sentinel = redis_factory(config_text=f"sentinel monitor windows 127.0.0.1 {redis_server.port} 1\n",
                             extra_args=["--sentinel"])
    await _round_trip(f"redis+sentinel://127.0.0.1:{sentinel.port}/windows/0")
    # An unreachable first sentinel is skipped.
    connection = connect(f"redis+sentinel://127.0.0.1:1,127.0.0.1:{sentinel.port}/windows")
    try:
        assert isinstance(connection.client.connection_pool, SentinelConnectionPool)
        assert await connection.client.ping()
    finally:
        await connection.close()


def test_sentinel_parsing() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@s1.internal,s2.internal:26380,[::1]:26381/mymaster/4"
        "?sentinel_password=sp&socket_timeout=1.5"
    )
    assert target == SentinelTarget(
        sentinels=(("s1.internal", 26379), ("s2.internal", 26380), ("::1", 26381)),
        service_name="mymaster", db=4, username="app", password="p@ss", tls=False,
        options={"sentinel_password": "sp", "socket_timeout": 1.5},
    )
    assert parse_sentinel_url("redis+sentinel://:pw@h/svc").db == 0
    assert parse_sentinel_url("redis+sentinel://:pw@h/svc").password == "pw"
    assert parse_sentinel_url("redis+sentinel://h/svc?db=2").db == 2
    assert parse_sentinel_url("rediss+sentinel://h/svc").tls
    for bad in ("redis+sentinel://h", "redis+sentinel:///svc", "redis+sentinel://h/svc/0/extra",
                "redis+sentinel://h:notaport/svc", "redis+sentinel://h:70000/svc"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


async def test_sentinel_client_is_built_with_auth_and_timeouts() -> None:
    connection = connect("redis+sentinel://:master-pw@127.0.0.1:1/svc/5?sentinel_password=sent-pw")
    try:
        assert connection.sentinel is not None
        sentinel_kwargs = connection.sentinel.sentinels[0].connection_pool.connection_kwargs
        assert sentinel_kwargs["password"] == "sent-pw"
        assert sentinel_kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT_S
        master_kwargs = connection.client.connection_pool.connection_kwargs
        assert (master_kwargs["password"], master_kwargs["db"]) == ("master-pw", 5)
        assert connection.url == "redis+sentinel://:***@127.0.0.1:1/svc/5?sentinel_password=***"
    finally:
        await connection.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379",
    "127.0.0.1:6379",
    "redis://127.0.0.1:6379?sockettimeout=1",          # typo: caught at startup, not at first use
    "redis://127.0.0.1:6379?socket_timeout=0",
    "redis://127.0.0.1:6379?sentinel_password=x",
    "redis://127.0.0.1:6379?ssl_ca_certs=/ca.pem",
])
def test_bad_urls_are_rejected_up_front(url: str) -> None:
    with pytest.raises(ValueError):
        connect(url)


@pytest.mark.parametrize(("url", "redacted"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
    ("redis://user:pw@h:1/0", "redis://user:***@h:1/0"),
    ("redis://justasecret@h:1/0", "redis://***@h:1/0"),
    ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("redis+sentinel://:a@b@s1,s2/m?sentinel_password=x&db=1", "redis+sentinel://:***@s1,s2/m?sentinel_password=***&db=1"),
])
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
