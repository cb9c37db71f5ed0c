"""`python -m bench [--smoke]`: gateway overhead vs a direct tier and vs LiteLLM proxy, side by side.

Starts on loopback: fast fake tiers, the gateway (pinned `recserve/device`, and the full recserve
cascade over three tiers), the same gateway with `--workers 2` (pinned; CPU summed over its
processes), LiteLLM proxy on the same fake tier when its CLI is available, and drives
each with wrk at several concurrencies. Prints one markdown table. Never asserts timings.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from bench import open_loop
from bench.decision import decision_cost
from bench.load import LoadResult, run_wrk, wrk_available
from bench.procs import Server, fake_tier, free_port, start
from bench.streaming_overhead import first_byte_ms

PROMPT = [{"role": "user", "content": "Say ok."}]


def _gateway(tier_ports: list[int], folder: Path, workers: int = 1) -> Server:
    config = {
        "auth": {"api_keys_env": None, "admin_key_env": None},
        "tiers": [{"name": n, "base_url": f"http://127.0.0.1:{p}/v1", "model": "fake", "max_concurrency": 256}
                  for n, p in zip(("device", "edge", "cloud"), tier_ports, strict=True)],
        "logging": {"access_log": False},
        # Several workers: each keeps its own memory windows (no Redis in this bench; the pinned
        # rows step no window at all).
        "windows": {"per_worker": workers > 1},
    }
    path = folder / f"gateway-{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
               "--log-level", "warning", "--workers", str(workers)]
    return start(f"gateway x{workers}", command, f"http://127.0.0.1:{port}", "/readyz",
                 log=folder / f"gateway-{workers}.log")


def _litellm(binary: str, tier_port: int, folder: Path) -> Server:
    config = {"model_list": [{"model_name": "fake", "litellm_params": {
        "model": "openai/fake", "api_base": f"http://127.0.0.1:{tier_port}/v1", "api_key": "none"}}],
        "litellm_settings": {"drop_params": True}}
    path = folder / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return start("litellm", [binary, "--config", str(path), "--port", str(port), "--host", "127.0.0.1"],
                 f"http://127.0.0.1:{port}", "/health/liveliness", log=folder / "litellm.log", timeout_s=120,
                 env={"LITELLM_LOCAL_MODEL_COST_MAP": "True",
                      # Both gateways run without client keys here, so neither pays for auth.
                      "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})


def _row(label: str, result: LoadResult, connections: int, cpu_s: float | None, rss_mb: float | None,
         direct: LoadResult | None) -> str:
    overhead = f"{result.p50_ms - direct.p50_ms:.3f}" if direct else "—"
    cpu = f"{cpu_s / result.requests * 1000:.2f}" if cpu_s is not None and result.requests else "—"
    rss = f"{rss_mb:.0f}" if rss_mb else "—"
    return (f"| {label} | {connections} | {result.p50_ms:.3f} | {result.p90_ms:.3f} | {result.p99_ms:.3f} | "
            f"{overhead} | {result.rps:,.0f} | {result.failures} | {cpu} | {rss} |")


def _measure(server: Server | None, url: str, body: dict[str, object], connections: int,
             seconds: float) -> tuple[LoadResult, float | None]:
    before = server.cpu_seconds() if server else None
    result = run_wrk(url, body, connections=connections, seconds=seconds, threads=2 if connections > 1 else 1)
    cpu = server.cpu_seconds() - before if server and before is not None else None
    return result, cpu


def _open_loop_rows(direct_url: str, gateway_url: str, rate: float, seconds: float) -> list[str]:
    """Direct, pinned and cascade at a fixed offered rate over 16 connections (below saturation)."""
    targets: tuple[tuple[str, str, dict[str, object]], ...] = (
               ("tier direct", direct_url, {"model": "fake", "messages": PROMPT, "logprobs": True, "top_logprobs": 5}),
               ("gateway, pinned tier", gateway_url, {"model": "recserve/device", "messages": PROMPT}),
               ("gateway, 3-tier cascade", gateway_url, {"model": "recserve", "messages": PROMPT}))
    rows: list[str] = []
    direct_p50: float | None = None
    for label, url, body in targets:
        result = open_loop.measure(url, body, rate=rate, connections=16, seconds=seconds)
        added = f"{result.p50_ms - direct_p50:.3f}" if direct_p50 is not None else "—"
        direct_p50 = result.p50_ms if direct_p50 is None else direct_p50
        rows.append(f"| {label} | {rate:,.0f} | {result.achieved_rps:,.0f} | {result.p50_ms:.3f} | "
                    f"{result.p90_ms:.3f} | {result.p99_ms:.3f} | {added} | {result.failures} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run that only checks it works")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered req/s of the open-loop rows")
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="LiteLLM proxy CLI (optional)")
    args = parser.parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk; `make system-deps` does it)", file=sys.stderr)
        return 2
    seconds = 1.0 if args.smoke else args.seconds
    concurrencies = (1, 16) if args.smoke else (1, 16, 128)
    servers: list[Server] = []
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="recserve-bench-") as tmp:
        folder = Path(tmp)
        try:
            ports = [free_port() for _ in range(3)]
            tiers = [fake_tier(p) for p in ports]
            servers += tiers
            gateway = _gateway(ports, folder)
            servers.append(gateway)
            # Started now, measured while the one-worker gateway idles: both side by side in one run.
            gateway2 = _gateway(ports, folder, workers=2)
            servers.append(gateway2)
            peer = _litellm(args.litellm, ports[0], folder) if args.litellm and not args.smoke else None
            if peer:
                servers.append(peer)
            chat = f"http://127.0.0.1:{ports[0]}/v1/chat/completions"
            for connections in concurrencies:
                direct, _ = _measure(tiers[0], chat, {"model": "fake", "messages": PROMPT, "logprobs": True,
                                                      "top_logprobs": 5}, connections, seconds)
                rows.append(_row("tier direct", direct, connections, None, None, None))
                pinned, cpu = _measure(gateway, gateway.url + "/v1/chat/completions",
                                       {"model": "recserve/device", "messages": PROMPT}, connections, seconds)
                rows.append(_row("gateway, pinned tier", pinned, connections, cpu, gateway.peak_rss_mb(), direct))
                cascade, cpu = _measure(gateway, gateway.url + "/v1/chat/completions",
                                        {"model": "recserve", "messages": PROMPT}, connections, seconds)
                rows.append(_row("gateway, 3-tier cascade", cascade, connections, cpu, gateway.peak_rss_mb(), direct))
                two, cpu = _measure(gateway2, gateway2.url + "/v1/chat/completions",
                                    {"model": "recserve/device", "messages": PROMPT}, connections, seconds)
                rows.append(_row("gateway --workers 2, pinned tier", two, connections, cpu, None, direct))
                if pinned.rps:
                    rows.append(f"| ratio 2 workers / 1 worker (pinned): throughput x{two.rps / pinned.rps:.2f} "
                                f"| {connections} | | | | | | | | |")
                if peer:
                    litellm, cpu = _measure(peer, peer.url + "/v1/chat/completions",
                                            {"model": "fake", "messages": PROMPT}, connections, seconds)
                    rows.append(_row("LiteLLM proxy", litellm, connections, cpu, peer.peak_rss_mb(), direct))
                    if litellm.rps:
                        rows.append(f"| ratio gateway/LiteLLM: throughput x{pinned.rps / litellm.rps:.2f}, "
                                    f"p50 x{pinned.p50_ms / litellm.p50_ms:.2f} | {connections} | | | | | | | | |")
            rate = 200.0 if args.smoke else args.rate
            open_rows = _open_loop_rows(chat, gateway.url + "/v1/chat/completions", rate, seconds)
            stream_direct, stream_gateway = first_byte_ms(chat, gateway.url + "/v1/chat/completions",
                                                          requests=50 if args.smoke else 300)
        finally:
            for server in reversed(servers):
                server.stop()
    p50, p99 = decision_cost(steps=2_000 if args.smoke else 20_000)
    print("| target | concurrency | p50 ms | p90 ms | p99 ms | added p50 ms | req/s | failed | CPU s / 1k req | "
          "peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print(f"Open loop: {rate:,.0f} req/s offered over 16 keep-alive connections for {seconds:g} s "
          "(latency from each request's scheduled start; python -m bench.open_loop):")
    print()
    print("| target | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | added p50 ms | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(open_rows))
    print()
    print(f"cascade decision in memory (estimate + window step, W=10000): p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    print(f"streaming, time to first byte (median): tier direct {stream_direct:.3f} ms, "
          f"through the gateway (pinned) {stream_gateway:.3f} ms, added {stream_gateway - stream_direct:.3f} ms")
    if not args.litellm:
        print("LiteLLM proxy: not measured (no `litellm` CLI; see bench/NOTES.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
