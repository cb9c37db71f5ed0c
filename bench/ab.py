"""`python -m bench.ab --base REV`: this tree's gateway against another revision's, side by side.

Both gateways serve the same fake tier on loopback; wrk drives them in alternating rounds (base,
this, base, this, …) so that whatever else runs on the machine weighs on both alike. Reports each
side's median over rounds of the tier-direct p50, the gateway p50 and the added p50 (pinned tier
and 3-tier cascade), and the ratio this/base. Never asserts timings.
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

PROMPT = [{"role": "user", "content": "Say ok."}]
DIRECT_BODY = {"model": "fake", "messages": PROMPT, "logprobs": True, "top_logprobs": 5}


def _gateway(name: str, tree: Path, tier_ports: list[int], folder: Path) -> Server:
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
    env = {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    return start(name, command, f"http://127.0.0.1:{port}", "/readyz", log=folder / f"{name}.log", env=env)


def _checkout(rev: str, folder: Path, name: str = "base") -> Path:
    tree = folder / name
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--this", help="git revision to measure instead of the working tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration per measurement")
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk; `make system-deps` does it)", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent.parent
    servers: list[Server] = []
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="recserve-ab-") as tmp:
        folder = Path(tmp)
        base_tree = _checkout(args.base, folder)
        this_tree = _checkout(args.this, folder, "this") if args.this else here
        try:
            ports = [free_port() for _ in range(3)]
            servers += [fake_tier(p) for p in ports]
            sides = {"base": _gateway("base", base_tree, ports, folder),
                     "this": _gateway("this", this_tree, ports, folder)}
            servers += sides.values()
            chat = f"http://127.0.0.1:{ports[0]}/v1/chat/completions"
            for _ in range(args.rounds):
                for side, gateway in sides.items():
                    direct = run_wrk(chat, DIRECT_BODY, connections=args.connections, seconds=args.seconds)
                    url = gateway.url + "/v1/chat/completions"
                    for target, model in (("pinned", "recserve/device"), ("cascade", "recserve")):
                        result = run_wrk(url, {"model": model, "messages": PROMPT},
                                         connections=args.connections, seconds=args.seconds)
                        samples.setdefault(f"{side} {target} p50", []).append(result.p50_ms)
                        samples.setdefault(f"{side} {target} added", []).append(result.p50_ms - direct.p50_ms)
                    samples.setdefault(f"{side} direct p50", []).append(direct.p50_ms)
        finally:
            for server in reversed(servers):
                server.stop()
            for tree in {base_tree, this_tree} - {here}:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)
    median = {key: statistics.median(values) for key, values in samples.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", args.base], capture_output=True, text=True).stdout.strip()
    this = f"{args.this}" if args.this else "this tree"
    print(f"A/B: base {args.base} ({commit}) vs {this}; {args.rounds} alternating rounds of {args.seconds:g} s, "
          f"{args.connections} connection(s); medians over rounds (ms); {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}")
    print()
    print("| target | base p50 | this p50 | base added p50 | this added p50 | this/base added |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in ("pinned", "cascade"):
        base_added, this_added = median[f"base {target} added"], median[f"this {target} added"]
        print(f"| gateway, {target} | {median[f'base {target} p50']:.3f} | {median[f'this {target} p50']:.3f} | "
              f"{base_added:.3f} | {this_added:.3f} | {this_added / base_added:.2f} |")
    print(f"| tier direct | {median['base direct p50']:.3f} | {median['this direct p50']:.3f} | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
