"""Prints the hostile suite's table at the end of the session (it is also in tests/artifacts/hostile.md)."""

from __future__ import annotations

import pytest

from tests.hostile.harness import REPORT_KEY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    table = config.stash.get(REPORT_KEY, None)
    if table:
        terminalreporter.write_sep("=", "hostile tiers")
        terminalreporter.write(table)
