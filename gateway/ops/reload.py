"""Hot reload and run-time policy changes, for one replica and across replicas.

Versioning: every change (a reload or a policy PATCH) gets a version. With `windows.store: redis`
the version comes from Redis (`gateway.ops.cluster`), so all replicas count alike: the replica that
takes the admin call applies the change, then announces it; the others re-read *their own*
config file (in a deployment, the same mounted file) and take the overrides from Redis. Without
Redis the version is a local counter.

A replica that missed an announcement notices right after its next request: the middleware calls
`catch_up()`, which compares versions in the background at most every `CHECK_INTERVAL_S` (one
HGET), so no request waits on Redis for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.cascade.overrides import Overrides, apply_patch
from gateway.cascade.runtime import Runtime, build_store
from gateway.config.loading import load_config
from gateway.config.schema import GatewayConfig
from gateway.ops.cluster import ClusterLink
from gateway.ops.holder import RuntimeHolder
from gateway.telemetry.metrics import Metrics
from policies.base import WindowStore
from policies.quality import ProbeStore, ProbeWindows

log = logging.getLogger("recserve.reload")

CHECK_INTERVAL_S: Final = 0.2
FAILED_CHECK_BACKOFF_S: Final = 5.0
Closer = Callable[[], Awaitable[None]]


def config_digest(config: GatewayConfig) -> str:
    """A short fingerprint of a config, to see at a glance which replicas run the same file."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def new_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _StoreSlot:
    """The window store and probe windows the current runtime borrows, and how to close them (None:
    the caller owns the window store; in-process probe windows need no closing)."""

    store: WindowStore
    probes: ProbeStore
    close: Closer | None
    windows: Any  # the WindowsConfig it was built from


@dataclass(slots=True)
class ReloadOutcome:
    version: int
    announced: bool
    changed: list[str] = field(default_factory=list)  # top-level config sections that differ


class Reloader:
    """Owns the RuntimeHolder's lifecycle: startup, reloads, policy patches, cluster catch-up."""

    def __init__(self, holder: RuntimeHolder, metrics: Metrics, config_path: str | None,
                 store_slot: _StoreSlot, replica_id: str) -> None:
        self.holder = holder
        self.metrics = metrics
        self.config_path = config_path
        self.replica_id = replica_id
        self.version = 0
        self.config_version = 0
        self.last_error: str | None = None
        self.reloaded_at: float | None = None
        self._store = store_slot
        self._lock = asyncio.Lock()
        self._link: ClusterLink | None = None
        self._next_check = 0.0
        self._checking = False
        self._recheck = False
        self._background: set[asyncio.Task[None]] = set()  # control-record checks off the request path

    @classmethod
    async def start(cls, config: GatewayConfig, *, config_path: str | None, metrics: Metrics,
                    store: WindowStore | None = None) -> Reloader:
        """Build the first runtime and, with the Redis store, join the cluster's control channel."""
        if store is not None:
            slot = _StoreSlot(store, ProbeWindows(config.policy.quality.window), None, config.windows)
        else:
            built = await build_store(config)
            slot = _StoreSlot(built.windows, built.probes, built.close, config.windows)
        runtime = await Runtime.start(config, store=slot.store, probes=slot.probes, metrics=metrics)
        holder = RuntimeHolder(runtime, drain_timeout_s=config.server.request_timeout_s + 5)
        reloader = cls(holder, metrics, config_path, slot, new_replica_id())
        await reloader._link_cluster(config)
        return reloader

    @property
    def clustered(self) -> bool:
        return self._link is not None

    # ----- admin actions -------------------------------------------------------------------------

    async def reload(self) -> ReloadOutcome:
        """Re-read the config file, validate it, swap it in and announce it.

        Raises ConfigError (every problem by key path) with the old config still serving, or
        FileNotFoundError-like ReloadUnavailable when this app was not started from a file.
        """
        async with self._lock:
            try:
                config = self._read_config()
                old = self.holder.current.config
                await self._swap(config, Overrides())
            except Exception:
                self.metrics.reloads.labels("reload", "rejected").inc()
                raise
            announced = await self._announce("reload", Overrides())
            self.metrics.reloads.labels("reload", "applied").inc()
            await self._report()
            return ReloadOutcome(self.version, announced, _changed_sections(old, config))

    async def patch_policy(self, patch: Any) -> ReloadOutcome:
        """Apply a `PATCH /admin/policy` body (PatchError when invalid) and announce it."""
        await self.catch_up(force=True)  # patch on top of the cluster's latest overrides
        async with self._lock:
            runtime = self.holder.current
            updated = apply_patch(runtime.config, runtime.overrides.current, patch)
            runtime.overrides.replace(updated)
            announced = await self._announce("policy", updated)
            self.metrics.reloads.labels("policy", "applied").inc()
            await self._report()
            return ReloadOutcome(self.version, announced)

    # ----- cluster -------------------------------------------------------------------------------

    async def catch_up(self, *, force: bool = False) -> None:
        """Apply a change announced by another replica if this one has not seen it yet.

        On the request path (`force=False`) this never waits on Redis: at most every
        `CHECK_INTERVAL_S` it starts a check in the background (one HGET), so a missed announcement
        is followed within a moment of the next request, and a frozen Redis delays nobody. None is
        started while checks fail (the listener reconnects on its own). `force=True` (an admin
        change, the listener) waits for the check, which is bounded by the Redis socket timeout.
        Never raises.
        """
        link = self._link
        if link is None:
            return
        if force:
            await self._check_now(link, force=True)
            return
        now = time.monotonic()
        if self._checking or now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL_S
        task = asyncio.get_running_loop().create_task(self._check_now(link, force=False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_now(self, link: ClusterLink, *, force: bool) -> None:
        if self._checking:
            # An announcement during a check that may have read the version just before it: look again.
            self._recheck |= force
            return
        self._checking = True
        try:
            self._next_check = time.monotonic() + CHECK_INTERVAL_S
            again = True
            while again:
                self._recheck = False
                await self._check(link)
                again = self._recheck
        except Exception as exc:
            self._next_check = time.monotonic() + FAILED_CHECK_BACKOFF_S
            log.warning("could not check the control record (%s: %s)", type(exc).__name__, exc)
        finally:
            self._checking = False

    async def _check(self, link: ClusterLink) -> None:
        if await link.version() <= self.version:
            return
        state = await link.state()
        async with self._lock:
            if state.version > self.version:
                await self._follow(state.version, state.config_version, Overrides.from_json(state.overrides))

    async def _follow(self, version: int, config_version: int, overrides: Overrides) -> None:
        """Apply another replica's change: re-read our file if it was a reload, then take the overrides."""
        kind = "reload" if config_version > self.config_version else "policy"
        if kind == "reload":
            try:
                await self._swap(self._read_config(), Overrides())
                self.last_error = None
            except Exception as exc:
                # Keep serving the old config; /admin/config shows the error on this replica's entry.
                self.last_error = f"reload announced as version {version} failed here: {exc}"
                log.error("%s", self.last_error)
                self.metrics.reloads.labels("reload", "rejected").inc()
            else:
                self.metrics.reloads.labels("reload", "applied").inc()
        runtime = self.holder.current
        fitting, dropped = overrides.fitting(runtime.config)
        if dropped:
            log.warning("ignoring overrides for tiers this replica does not have: %s", ", ".join(dropped))
        runtime.overrides.replace(fitting)
        if kind == "policy":
            self.metrics.reloads.labels("policy", "applied").inc()
        self.version, self.config_version = version, config_version
        log.info("following cluster change to version %d (%s)", version, kind)
        await self._report()

    async def _announce(self, kind: str, overrides: Overrides) -> bool:
        link = self._link
        if link is None:
            self.version += 1
            if kind == "reload":
                self.config_version = self.version
            return True
        try:
            version = await link.announce(kind, overrides.to_json())
        except Exception as exc:
            self.last_error = f"applied here but not announced to other replicas: {exc}"
            log.error("%s", self.last_error)
            return False
        self.version = version
        if kind == "reload":
            self.config_version = version
        self.last_error = None
        return True

    async def _link_cluster(self, config: GatewayConfig) -> None:
        """(Re)join the control channel of the config's Redis; follow the cluster's current overrides."""
        target = (config.windows.redis_url, config.windows.namespace) if config.windows.store == "redis" else None
        if self._link is not None and self._link.target == target:
            return
        if self._link is not None:
            await self._link.aclose()
            self._link = None
        if target is None:
            return
        link = ClusterLink(target[0], target[1], self.replica_id)
        self._link = link
        try:
            state = await link.state()
        except Exception as exc:
            log.warning("control record unreachable at start (%s); will catch up later", exc)
        else:
            # A new replica runs its own file, at the cluster's version, with the cluster's overrides.
            self.version, self.config_version = state.version, state.config_version
            fitting, _ = Overrides.from_json(state.overrides).fitting(config)
            self.holder.current.overrides.replace(fitting)
        link.listen(lambda: self.catch_up(force=True), self._report)

    async def _report(self) -> None:
        if self._link is None:
            return
        try:
            await self._link.report(self.describe())
        except Exception as exc:
            log.debug("could not report to the replica registry: %s", exc)

    def describe(self) -> dict[str, Any]:
        """This replica's entry in the registry and in GET /admin/config."""
        return {"version": self.version, "config_version": self.config_version,
                "config_digest": config_digest(self.holder.current.config), "error": self.last_error}

    async def replicas(self) -> list[dict[str, Any]]:
        if self._link is None:
            return [{"id": self.replica_id, **self.describe(), "seen_s_ago": 0.0, "stale": False}]
        try:
            return await self._link.replicas()
        except Exception as exc:
            return [{"id": self.replica_id, **self.describe(), "registry_error": str(exc)}]

    # ----- swapping ------------------------------------------------------------------------------

    def _read_config(self) -> GatewayConfig:
        if self.config_path is None:
            raise ReloadUnavailable("this gateway was not started from a config file, so there is nothing to re-read")
        return load_config(Path(self.config_path))

    async def _swap(self, config: GatewayConfig, overrides: Overrides) -> None:
        old_slot = self._store
        new_slot = old_slot
        if old_slot.close is not None and config.windows != old_slot.windows:
            built = await build_store(config)
            new_slot = _StoreSlot(built.windows, built.probes, built.close, config.windows)
        try:
            runtime = await Runtime.start(config, store=new_slot.store, probes=new_slot.probes,
                                          metrics=self.metrics, overrides=overrides,
                                          workloads=self.holder.current.workloads)
        except Exception:
            if new_slot is not old_slot and new_slot.close is not None:
                await new_slot.close()
            raise
        new_slot.probes.resize(config.policy.quality.window)  # kept probes stay; the window may change
        self._store = new_slot

        async def retire(old: Runtime) -> None:
            await old.aclose()
            if new_slot is not old_slot and old_slot.close is not None:
                await old_slot.close()

        self.holder.swap(runtime, retire=retire)
        self.reloaded_at = time.time()
        await self._link_cluster(config)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._link is not None:
            await self._link.aclose()
        await self.holder.aclose()
        if self._store.close is not None:
            await self._store.close()


class ReloadUnavailable(Exception):
    """POST /admin/reload on an app built from an in-memory config (no file to re-read)."""


def _changed_sections(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(k for k in after if before.get(k) != after.get(k))
