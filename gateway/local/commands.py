"""`recserve tiers up | down | status`: run the config's local tiers on this machine."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.loading import ConfigError, load_config
from gateway.config.schema import GatewayConfig, LocalTierConfig
from gateway.local.catalog import ModelSpec, UnknownModelError, lookup
from gateway.local.models import ModelFetchError, ensure_model
from gateway.local.paths import CacheLayout, default_layout
from gateway.local.placement import Demand, available_cores, plan
from gateway.local.proc import CommandFailed
from gateway.local.server_build import ServerBuildError, ensure_server
from gateway.local.supervisor import (
    DETERMINISTIC_FLAGS,
    LOOPBACK,
    RunningTier,
    TierSpec,
    TierStartError,
    check_port,
    running_from_record,
    runs_deterministic,
    start_tier,
    status,
    stop,
    stop_recorded,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class LocalTier:
    """A config tier with a `local:` section, resolved against the model catalog."""

    index: int
    name: str
    base_url: str
    local: LocalTierConfig
    model: ModelSpec


class UsageError(Exception):
    """A problem with the config or arguments: exit status 2, one message line per problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


def _say(message: str) -> None:
    print(message, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recserve tiers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "build/fetch what is missing and start every tier that has a `local:` section"),
        ("down", "stop the local tiers by their recorded PIDs"),
        ("status", "show PID and /health of each local tier (exit 1 unless all are healthy)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
        if name == "up":
            cmd.add_argument("--timeout", type=float, default=120.0,
                             help="seconds to wait for each tier's /health (default: 120)")
    return parser


def local_tiers(config: GatewayConfig) -> list[LocalTier]:
    """The tiers this machine runs, with their models resolved; UsageError lists every bad entry."""
    tiers: list[LocalTier] = []
    problems: list[str] = []
    ports: dict[int, str] = {}
    for index, tier in enumerate(config.tiers):
        if tier.local is None:
            continue
        try:
            spec = lookup(tier.local.model)
        except UnknownModelError as exc:
            problems.append(f"tiers.{index}.local.model: {exc}")
            continue
        if tier.local.port in ports:
            problems.append(f"tiers.{index}.local.port: {tier.local.port} is also used by tier "
                            f"'{ports[tier.local.port]}'")
        ports[tier.local.port] = tier.name
        tiers.append(LocalTier(index, tier.name, tier.base_url, tier.local, spec))
    if problems:
        raise UsageError(problems)
    return tiers


def _base_url_mismatch(tier: LocalTier) -> str | None:
    # The gateway calls base_url; the server listens on local.port. Both must agree.
    parts = urlsplit(tier.base_url)
    if parts.hostname in (LOOPBACK, "localhost") and parts.port == tier.local.port:
        return None
    return (f"warning: tier '{tier.name}' runs on {LOOPBACK}:{tier.local.port} but its base_url is "
            f"{tier.base_url}; the gateway will not reach it there")


def tiers_up(tiers: list[LocalTier], layout: CacheLayout, *, health_timeout_s: float) -> int:
    """Build/fetch what is missing, start every tier not already running, wait for each /health."""
    run_dir = layout.ensure(layout.run)
    pending: list[LocalTier] = []
    for tier in tiers:
        if (warning := _base_url_mismatch(tier)) is not None:
            _say(warning)
        running = running_from_record(tier.name, run_dir)
        if running is not None and running.port == tier.local.port and status(
            tier.name, tier.local.port, run_dir).healthy:
            _say(f"tier '{tier.name}': already running on {running.base_url} (pid {running.pid})")
            if tier.local.deterministic and not runs_deterministic(running.pid):
                _say(f"warning: tier '{tier.name}' was started without {' '.join(DETERMINISTIC_FLAGS)}: its "
                     f"logprobs depend on what it served before; `recserve tiers down` and `up` again")
            continue
        # Fail on a taken port now, not after minutes of building and downloading.
        check_port(tier.name, tier.local.port)
        pending.append(tier)
    if not pending:
        return EXIT_OK
    started_build = time.monotonic()
    server = ensure_server(layout, report=_say)
    _say(f"llama-server ready ({time.monotonic() - started_build:.1f} s): {server.executable}")
    paths: dict[str, Path] = {}
    for tier in pending:
        paths[tier.name] = ensure_model(tier.model, layout, report=_say)
    # Placed over every local tier, running or not, so each keeps its share of the cores.
    placements = dict(zip((tier.name for tier in tiers), plan(
        [Demand(tier.name, tier.model.size, tier.local.threads) for tier in tiers], available_cores()),
        strict=True))
    started: list[RunningTier] = []
    try:
        for tier in pending:
            t0 = time.monotonic()
            place = placements[tier.name]
            running = start_tier(
                server,
                TierSpec(tier.name, paths[tier.name], tier.local.port, place.threads,
                         tier.local.ctx_size, tier.local.parallel, deterministic=tier.local.deterministic,
                         threads_batch=place.threads_batch, cpus=place.cpus, poll=place.poll),
                run_dir, health_timeout_s=health_timeout_s,
            )
            started.append(running)
            _say(f"tier '{tier.name}': up on {running.base_url} with {tier.model.key}, {place.describe()} "
                 f"(pid {running.pid}, {time.monotonic() - t0:.1f} s; log {running.log_path})")
    except BaseException:
        # All or nothing: a half-started set would leave the gateway cascading over a missing tier.
        for running in started:
            stop(running, run_dir)
        raise
    return EXIT_OK


def tiers_down(tiers: list[LocalTier], layout: CacheLayout) -> int:
    """Stop each tier by its recorded PID."""
    for tier in tiers:
        pid = stop_recorded(tier.name, layout.run)
        _say(f"tier '{tier.name}': " + (f"stopped (pid {pid})" if pid is not None else "not running"))
    return EXIT_OK


def tiers_status(tiers: list[LocalTier], layout: CacheLayout) -> int:
    """Print one line per tier; exit 1 unless every tier is healthy."""
    all_healthy = True
    for tier in tiers:
        st = status(tier.name, tier.local.port, layout.run)
        all_healthy &= st.healthy
        state = "healthy" if st.healthy else ("starting/unhealthy" if st.alive else "down")
        owner = f"pid {st.pid}" if st.alive else "no recorded process"
        _say(f"{tier.name:<12} {tier.model.key:<20} {LOOPBACK}:{tier.local.port:<6} {state:<18} {owner}  "
             f"log {st.log_path}")
    return EXIT_OK if all_healthy else EXIT_FAILED


def main(argv: list[str]) -> int:
    """Entry point of `recserve tiers ...` (argv excludes the word 'tiers'); returns the exit status."""
    args = _parser().parse_args(argv)
    layout = default_layout()
    try:
        tiers = local_tiers(load_config(args.config))
        if not tiers:
            _say(f"{args.config}: no tier has a `local:` section; nothing to do")
            return EXIT_OK
        if args.command == "up":
            return tiers_up(tiers, layout, health_timeout_s=args.timeout)
        if args.command == "down":
            return tiers_down(tiers, layout)
        return tiers_status(tiers, layout)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        for line in exc.lines:
            print(f"{args.config}: {line}", file=sys.stderr)
        return EXIT_USAGE
    except (TierStartError, ModelFetchError, ServerBuildError, CommandFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
