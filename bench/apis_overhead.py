"""`python -m bench.apis_overhead [--smoke]`: the added p50 of the Responses and Messages APIs
against chat's, pinned to one fake tier, in one run.

Each round drives the tier directly, then the gateway's /v1/chat/completions, /v1/responses (with
and without `store`) and /v1/messages, all pinned to `recserve/device`, with wrk over the same
connections; rounds alternate so drift on a shared machine hits every target alike. Prints the
median over rounds of each p50 and its difference from the direct p50. Never asserts timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.__main__ import PROMPT, _gateway
from bench.load import run_wrk, wrk_available
from bench.procs import Server, fake_tier, free_port

TEXT = PROMPT[0]["content"]
PINNED = "recserve/device"


def _targets(tier_url: str, gateway_url: str) -> list[tuple[str, str, dict[str, object]]]:
    return [
        ("tier direct (chat)", tier_url + "/v1/chat/completions",
         {"model": "fake", "messages": PROMPT, "logprobs": True, "top_logprobs": 5}),
        ("gateway /v1/chat/completions", gateway_url + "/v1/chat/completions", {"model": PINNED, "messages": PROMPT}),
        ("gateway /v1/responses", gateway_url + "/v1/responses", {"model": PINNED, "input": TEXT}),
        ("gateway /v1/responses store=false", gateway_url + "/v1/responses",
         {"model": PINNED, "input": TEXT, "store": False}),
        ("gateway /v1/messages", gateway_url + "/v1/messages", {"model": PINNED, "max_tokens": 16, "messages": PROMPT}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apis_overhead", description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    seconds, rounds = (1.0, 1) if args.smoke else (args.seconds, args.rounds)
    servers: list[Server] = []
    p50s: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="recserve-bench-") as tmp:
        try:
            ports = [free_port() for _ in range(3)]
            servers += [fake_tier(p) for p in ports]
            gateway = _gateway(ports, Path(tmp))
            servers.append(gateway)
            targets = _targets(f"http://127.0.0.1:{ports[0]}", gateway.url)
            for _ in range(rounds):
                for label, url, body in targets:
                    result = run_wrk(url, body, connections=args.connections, seconds=seconds)
                    p50s.setdefault(label, []).append(result.p50_ms)
                    failures[label] = failures.get(label, 0) + result.failures
        finally:
            for server in reversed(servers):
                server.stop()
    direct = statistics.median(p50s[targets[0][0]])
    chat = statistics.median(p50s[targets[1][0]])
    print(f"| target (pinned, {args.connections} connection(s), median of {rounds} rounds) | p50 ms | "
          "added p50 ms | vs chat ms | failed |")
    print("|---|---:|---:|---:|---:|")
    for label, _, _ in targets:
        p50 = statistics.median(p50s[label])
        print(f"| {label} | {p50:.3f} | {p50 - direct:.3f} | {p50 - chat:+.3f} | {failures[label]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
