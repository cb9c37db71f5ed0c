"""`python -m bench.tracing_cost --base REV`: what OpenTelemetry tracing costs per request, side by side.

Three gateways serve the same fake tiers and are measured in interleaved rounds (bench.ab): `before`,
the revision REV (checked out apart); `off`, this tree as shipped (tracing off, the default); `on`,
this tree with tracing on the standard way (`OTEL_TRACES_EXPORTER=otlp`, the SDK's default batching),
exporting every span over OTLP/HTTP to a receiver on loopback that decodes only the span count.
Reports each side's medians over rounds (p50, p99, and the p50 added to the tier direct) and the
ratios to `before`, the spans the receiver got per request on the `on` side (2 per pinned request:
the server span and one tier attempt), and the load average around the run. Never asserts timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ab import Samples, add_round_options, checkout, gateway, interleaved_rounds, short, wrk_missing
from bench.procs import Server, fake_tier, free_port
from tests.support.otlp_receiver import OtlpReceiver

SIDES = ("before", "off", "on")


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _table(samples: Samples, targets: list[str]) -> list[str]:
    median = {key: statistics.median(values) for key, values in samples.items()}
    lines = ["| target | side | p50 | p99 | added p50 | added p99 | p50 / before | added p50 / before |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for target in targets:
        before_p50, before_added = median[f"before {target} p50"], median[f"before {target} added"]
        for side in SIDES:
            p50, added = median[f"{side} {target} p50"], median[f"{side} {target} added"]
            lines.append(f"| gateway, {target} | {side} | {p50:.3f} | {median[f'{side} {target} p99']:.3f} | "
                         f"{added:.3f} | {median[f'{side} {target} added p99']:.3f} | {p50 / before_p50:.3f} | "
                         f"{added / before_added:.3f} |")
    for side in SIDES:
        lines.append(f"| tier direct | {side} | {median[f'{side} direct p50']:.3f} | | | | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__)
    parser.add_argument("--base", required=True, help="git revision without tracing (the `before` side)")
    add_round_options(parser)
    args = parser.parse_args(argv)
    if wrk_missing():
        return 2
    here = Path(__file__).resolve().parent.parent
    receiver = OtlpReceiver(decode=False).start()
    servers: list[Server] = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="recserve-tracing-") as tmp:
        folder = Path(tmp)
        base = checkout(args.base, folder, "before")
        try:
            ports = [free_port() for _ in range(3)]
            servers += [fake_tier(p) for p in ports]
            traced = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "recserve-bench"}
            untraced = {name: "" for name in traced}  # whatever this shell sets, the other sides trace nothing
            sides = {"before": gateway("before", base, ports, folder, untraced),
                     "off": gateway("off", here, ports, folder, untraced),
                     "on": gateway("on", here, ports, folder, traced)}
            servers += sides.values()
            samples = interleaved_rounds(sides, ports[0], args.targets, rounds=args.rounds, seconds=args.seconds,
                                         connections=args.connections)
            sides["on"].stop()  # flushes what the SDK still holds
        finally:
            for server in reversed(servers):
                server.stop()
            receiver.stop()
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=False, capture_output=True)
    requests = sum(sum(samples[f"on {target} requests"]) for target in args.targets)
    print(f"Tracing cost: before = {args.base} ({short(args.base)}), off and on = this tree; {args.rounds} rounds of "
          f"{args.seconds:g} s in rotating order, {args.connections} connection(s); medians over rounds (ms); "
          f"{os.cpu_count()} cores, load average (1/5/15 min) {load_before} before, {_load()} after")
    print()
    print("\n".join(_table(samples, args.targets)))
    print()
    print(f"`on` side: {receiver.span_count} spans received over OTLP/HTTP for {requests:.0f} requests "
          f"({receiver.span_count / max(requests, 1):.2f} per request; {receiver.body_bytes / 1e6:.1f} MB); "
          f"what the SDK's bounded queue dropped under load is the shortfall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
