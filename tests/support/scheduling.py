"""How `make test` spreads the suite over pytest-xdist workers (`-n 2 --dist loadgroup`, see the Makefile).

A module is one unit of work: its module-scoped fixtures (a Redis, replica gateways, nginx, a browser)
start once, on one worker. Every real-model module (tests/**/test_realmodel*.py, marked `realmodel`) is one
unit together, so the llama.cpp tiers (session-scoped `real_tier_list`) start once on one worker; it is
the longest unit, so it is handed out first (then the clean-venv installs) and the other worker takes
everything else meanwhile.
A test marked `xdist_group(name)` still runs with its group, as under plain `--dist loadgroup`.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

REALMODEL_GROUP = "realmodel"
# The longest units, handed out first in this order (longest-first keeps both workers busy to the end):
# the real models, then the clean-venv installs (minutes of pip, mostly waiting on the network).
LONGEST_FIRST = (REALMODEL_GROUP, "tests/packaging/test_clean_install.py")


def is_realmodel_module(path: str) -> bool:
    """The convention the scheduler relies on (it sees node ids only); conftest checks the marks match."""
    return PurePosixPath(path).name.startswith("test_realmodel")


def module_scheduler(config: Any, log: Any) -> Any:
    """The scheduler for `--dist loadgroup` (xdist imported here: `-p no:xdist` and plain pytest need none)."""
    from xdist.scheduler import LoadGroupScheduling

    class ModuleScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an explicit xdist_group
                return super()._split_scope(nodeid)
            path = nodeid.split("::", 1)[0]
            return REALMODEL_GROUP if is_realmodel_module(path) else path

        def _assign_work_unit(self, node: Any) -> None:
            for scope in reversed(LONGEST_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)
