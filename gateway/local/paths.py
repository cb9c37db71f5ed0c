"""Where the local-tier cache lives: the server build, the models, and runtime state (pids, logs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "RECSERVE_CACHE_DIR"
RUN_ENV = "RECSERVE_RUN_DIR"


@dataclass(frozen=True)
class CacheLayout:
    """Folders under one cache root; nothing is created until a caller asks for it."""

    root: Path
    run_root: Path | None = None

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def run(self) -> Path:
        """PID and log files of running tiers."""
        return self.run_root if self.run_root is not None else self.root / "run"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def ensure(self, folder: Path) -> Path:
        """Create `folder` (and parents) if needed and return it."""
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def default_cache_root() -> Path:
    """`$RECSERVE_CACHE_DIR` when set, else `~/.cache/recserve`."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "recserve"


def default_layout() -> CacheLayout:
    """The layout rooted at `default_cache_root()`; `$RECSERVE_RUN_DIR` moves only the runtime state.

    A separate run folder lets a second set of tiers (a test run) share the big cache without
    touching the PID files of the tiers `make run` started.
    """
    override = os.environ.get(RUN_ENV, "").strip()
    return CacheLayout(default_cache_root(), Path(override).expanduser() if override else None)
