"""Streaming TTFT through the gateway on paced fake tiers: the gateway's own share, without llama.cpp.

    .venv/bin/python -m bench.early_ttft [--token-ms 10] [--requests 60]

The same measurement as `bench.streaming_ttft` (same client, configurations and report), but the tiers
are `bench.fake_tier` processes that stream one token every `--token-ms` ms with fixed logprobs, so
the tier's own time to k tokens is the same for every request and nothing but the gateway competes
for the CPU. What it isolates: what the gateway adds on top of a tier's time to its first token
(pinned) and to its k-th token (early-commit), measured side by side. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Server, free_port, start
from bench.streaming_ttft import KS, Target, gateway_config, report, start_gateway, stream_once


def _paced_tier(token_ms: float, tokens: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.fake_tier", "--port", str(port), "--token-ms", str(token_ms),
               "--stream-tokens", str(tokens)]
    return start(f"paced-tier:{port}", command, f"http://127.0.0.1:{port}", "/v1/models")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.early_ttft", description=__doc__.split("\n")[0])
    parser.add_argument("--token-ms", type=float, default=10.0, help="the tiers' time per token")
    parser.add_argument("--requests", type=int, default=60, help="per configuration")
    args = parser.parse_args(argv)
    tokens = max(KS) + 8
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory(prefix="early-ttft-") as tmp:
            directory = Path(tmp)
            tiers = [_paced_tier(args.token_ms, tokens) for _ in range(3)]
            servers += tiers
            base: dict[str, Any] = {
                "auth": {"api_keys_env": None, "admin_key_env": None}, "logging": {"access_log": False},
                "tiers": [{"name": name, "base_url": f"{tier.url}/v1", "model": "fake"}
                          for name, tier in zip(("device", "edge", "cloud"), tiers, strict=True)]}
            modes = [("buffered", 8), *(("early", k) for k in KS)]
            gateways = [start_gateway(gateway_config(base, mode, k, directory), directory) for mode, k in modes]
            servers += gateways
            direct = Target("direct", f"{tiers[0].url}/v1/chat/completions", "fake")
            pinned = Target("pinned", f"{gateways[0].url}/v1/chat/completions", "recserve/device")
            cascades = [(mode, k, Target(f"{mode}-{k}", f"{server.url}/v1/chat/completions", "recserve"))
                        for (mode, k), server in zip(modes, gateways, strict=True)]
            targets = [direct, pinned, *(t for _, _, t in cascades)]
            load_before = os.getloadavg()
            with httpx.Client(timeout=httpx.Timeout(30, connect=5)) as client:
                for target in targets:  # warm-up, discarded
                    for _ in range(3):
                        stream_once(client, target, "Say ok.", tokens)
                for i in range(args.requests):
                    for target in targets[i % len(targets):] + targets[:i % len(targets)]:
                        target.samples.append(stream_once(client, target, "Say ok.", tokens))
            load_after = os.getloadavg()
            print("\n".join(report(direct, pinned, cascades)))
            print(f"\npaced fake tiers: one token every {args.token_ms:g} ms, {tokens} tokens per answer; "
                  f"{args.requests} requests per configuration, sequential, rotating order; load average "
                  f"(1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    finally:
        for server in reversed(servers):
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
