"""Real processes for the deploy tests: redis-server, nginx, scripted tiers, `recserve serve`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.scripted_tier import ThreadedTier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiers() -> Iterator[dict[str, ThreadedTier]]:
    started: dict[str, ThreadedTier] = {}
    try:
        for name in ("device", "edge", "cloud"):
            started[name] = ThreadedTier(name).start()
        yield started
    finally:
        for tier in started.values():
            tier.stop()


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.skip("nginx is not installed (Debian package nginx; make system-deps)")
    return found
