"""`python -m bench.ab --base REV [--base REV2 …]`: this tree's gateway against other revisions', side by side.

All gateways serve the same fake tier on loopback; wrk drives them in alternating rounds (base,
this, base, this, …; with several bases each round visits every one) so that whatever else runs on
the machine weighs on all alike. Reports each side's median over rounds of the tier-direct p50, the
gateway p50 and p99, the added p50 and p99 (gateway minus the direct measurement taken just before
it, pinned tier and 3-tier cascade), the gateway's CPU time per request (its own cost, the figure
least moved by a noisy neighbour), and the ratios this/side (for CPU, the median of each round's
ratio). Never asserts timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.load import run_wrk, wrk_available
from bench.procs import Server, fake_tier, free_port, start

Samples = dict[str, list[float]]  # "<side> <measure>" -> one value per round

PROMPT = [{"role": "user", "content": "Say ok."}]
DIRECT_BODY = {"model": "fake", "messages": PROMPT, "logprobs": True, "top_logprobs": 5}
TARGETS = {"pinned": "recserve/device", "cascade": "recserve"}


def gateway(name: str, tree: Path, tier_ports: list[int], folder: Path, env: dict[str, str] | None = None) -> Server:
    """`recserve serve` from the source tree `tree`, on fake tiers; `env` adds environment variables."""
    config = {
        "auth": {"api_keys_env": None, "admin_key_env": None},
        "tiers": [{"name": n, "base_url": f"http://127.0.0.1:{p}/v1", "model": "fake", "max_concurrency": 256}
                  for n, p in zip(("device", "edge", "cloud"), tier_ports, strict=True)],
        "logging": {"access_log": False},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
               "--log-level", "warning"]
    # The revision's own code first on the path (and not the working directory's); the interpreter
    # and its packages are shared.
    env = {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1", **(env or {})}
    return start(name, command, f"http://127.0.0.1:{port}", "/readyz", log=folder / f"{name}.log", env=env)


def interleaved_rounds(sides: dict[str, Server], tier_port: int, targets: list[str], *, rounds: int, seconds: float,
                       connections: int) -> Samples:
    """wrk against every side in rotating order, `rounds` times; each gateway measurement follows a
    measurement of the tier direct, so that what else runs on the machine weighs on all sides alike."""
    samples: Samples = {}
    names = list(sides)
    chat = f"http://127.0.0.1:{tier_port}/v1/chat/completions"
    for round_ in range(rounds):
        # Rotate the order every round so that no side always follows the same neighbour.
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for side in order:
            url = sides[side].url + "/v1/chat/completions"
            for target in targets:
                direct = run_wrk(chat, DIRECT_BODY, connections=connections, seconds=seconds)
                cpu_before = sides[side].cpu_seconds()
                result = run_wrk(url, {"model": TARGETS[target], "messages": PROMPT},
                                 connections=connections, seconds=seconds)
                # CPU per request is the gateway's own cost, which a busy neighbour slows but does not add to.
                cpu_us = (sides[side].cpu_seconds() - cpu_before) / max(result.requests, 1) * 1e6
                for key, value in ((f"{target} p50", result.p50_ms), (f"{target} p99", result.p99_ms),
                                   (f"{target} added", result.p50_ms - direct.p50_ms),
                                   (f"{target} added p99", result.p99_ms - direct.p99_ms),
                                   (f"{target} requests", float(result.requests)), (f"{target} cpu", cpu_us),
                                   ("direct p50", direct.p50_ms)):
                    samples.setdefault(f"{side} {key}", []).append(value)
    return samples


def add_round_options(parser: argparse.ArgumentParser) -> None:
    """The options of `interleaved_rounds`: rounds, wrk's duration, connections, targets."""
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration per measurement")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))


def wrk_missing() -> bool:
    if wrk_available():
        return False
    print("wrk is not installed (apt-get install wrk; `make system-deps` does it)", file=sys.stderr)
    return True


def checkout(rev: str, folder: Path, name: str) -> Path:
    tree = folder / name
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    return tree


def short(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--base", required=True, action="append",
                        help="git revision to compare against (repeat for several)")
    parser.add_argument("--this", help="git revision to measure instead of the working tree")
    add_round_options(parser)
    args = parser.parse_args(argv)
    if wrk_missing():
        return 2
    here = Path(__file__).resolve().parent.parent
    servers: list[Server] = []
    samples: Samples = {}
    names = [f"base{i}" if len(args.base) > 1 else "base" for i in range(len(args.base))] + ["this"]
    trees: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="recserve-ab-") as tmp:
        folder = Path(tmp)
        try:
            for name, rev in zip(names, args.base, strict=False):
                trees[name] = checkout(rev, folder, name)
            trees["this"] = checkout(args.this, folder, "this") if args.this else here
            ports = [free_port() for _ in range(3)]
            servers += [fake_tier(p) for p in ports]
            sides = {name: gateway(name, tree, ports, folder) for name, tree in trees.items()}
            servers += sides.values()
            samples = interleaved_rounds(sides, ports[0], args.targets, rounds=args.rounds, seconds=args.seconds,
                                         connections=args.connections)
        finally:
            for server in reversed(servers):
                server.stop()
            for tree in set(trees.values()) - {here}:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)
    median = {key: statistics.median(values) for key, values in samples.items()}
    this = f"{args.this} ({short(args.this)})" if args.this else "this tree"
    bases = ", ".join(f"{name} = {rev} ({short(rev)})" for name, rev in zip(names, args.base, strict=False))
    print(f"A/B: {bases}; this = {this}; {args.rounds} rounds of {args.seconds:g} s in rotating order, "
          f"{args.connections} connection(s); medians over rounds (ms); {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}")
    print()
    print("| target | side | p50 | p99 | added p50 | added p99 | this / side, added p50 | CPU µs / request "
          "| this / side, CPU (median of rounds) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in args.targets:
        this_added, this_cpu = median[f"this {target} added"], samples[f"this {target} cpu"]
        for side in names:
            added, cpu = median[f"{side} {target} added"], median[f"{side} {target} cpu"]
            # Paired by round: the two measurements of a round saw the same neighbours.
            cpu_ratio = statistics.median(t / s for t, s in zip(this_cpu, samples[f"{side} {target} cpu"], strict=True))
            print(f"| gateway, {target} | {side} | {median[f'{side} {target} p50']:.3f} | "
                  f"{median[f'{side} {target} p99']:.3f} | {added:.3f} | {median[f'{side} {target} added p99']:.3f} | "
                  f"{this_added / added:.2f} | {cpu:.0f} | {cpu_ratio:.2f} |")
    for side in names:
        print(f"| tier direct | {side} | {median[f'{side} direct p50']:.3f} | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
