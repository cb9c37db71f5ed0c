"""Streaming TTFT on the real local llama.cpp tiers: straight from the device tier vs through the gateway,
`buffered` vs `early` (decide_after_tokens k = 4, 8, 16).

    .venv/bin/python -m bench.streaming_ttft [--config config.yaml] [--prompts 12]

TTFT = time from sending the request to the first chunk carrying non-empty content text. One gateway process
per streaming mode runs on a free loopback port (a temp copy of the config, client keys off); every prompt is
sent once to every configuration, in rotating order, sequentially, so the medians are measured side by side.
The device tier is, by default, a private llama-server of the same binary, model and threads on a free port
(stopped at the end): the shared one on 8101 serves one request at a time, so other users' traffic would be
queueing time in "the device's own time to k tokens". `--shared-device` measures the configured one instead.
Edge and cloud are the configured (shared) tiers; `recserve tiers up` starts them if they are not running
(and `tiers down` stops them at the end). Before each round the prompt is primed on the device (max_tokens 1)
so every configuration meets the same llama.cpp prompt cache. The goal checked: with early-commit, the TTFT
of a device-answered request is at most the device's own time to k tokens + 5 ms (medians).
A benchmark, not a test: it prints and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.procs import Server, free_port, start
from gateway.config.loading import load_config
from gateway.local.commands import local_tiers
from gateway.local.models import ensure_model
from gateway.local.paths import default_layout
from gateway.local.server_build import ensure_server
from gateway.local.supervisor import RunningTier, TierSpec, start_tier, stop

KS = (4, 8, 16)
GOAL_SLACK_MS = 5.0
WARMUP = ["Write one sentence about rain.", "Write one sentence about bread."]
PROMPTS = [f"Write one sentence about {topic}." for topic in (
    "the sea", "mountains", "coffee", "a cat", "the moon", "trains",
    "autumn", "a library", "bicycles", "the desert", "music", "a garden")]
_SCRIPT = Path(sys.executable).with_name("recserve")
RECSERVE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "gateway.cli"]


@dataclass
class Sample:
    ttft: float | None  # seconds to the first non-empty content text
    total: float        # seconds to the end of the stream
    tier: str | None    # x-recserve-tier (None when straight from the tier)
    to_k: dict[int, float] = field(default_factory=dict)  # seconds to the k-th token (logprob entries)


@dataclass
class Target:
    label: str
    url: str
    model: str
    samples: list[Sample] = field(default_factory=list)


def stream_once(client: httpx.Client, target: Target, prompt: str, max_tokens: int) -> Sample:
    """One streamed chat completion, its chunks timestamped as they arrive."""
    body: dict[str, Any] = {
        "model": target.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if not target.model.startswith("recserve"):
        body |= {"logprobs": True, "top_logprobs": 5}  # what the gateway asks of a tier
    ttft: float | None = None
    to_k: dict[int, float] = {}
    tokens = 0
    started = time.perf_counter()
    with client.stream("POST", target.url, json=body) as response:
        response.raise_for_status()
        tier = response.headers.get("x-recserve-tier")
        for line in response.iter_lines():
            now = time.perf_counter() - started
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{target.label}: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                text = (choice.get("delta") or {}).get("content")
                if text and ttft is None:
                    ttft = now
                logprobs = choice.get("logprobs") or {}
                counted = len(logprobs.get("content") or []) or int(bool(text))
                for k in KS:
                    if tokens < k <= tokens + counted:
                        to_k[k] = now
                tokens += counted
    total = time.perf_counter() - started
    for k in KS:
        to_k.setdefault(k, total)  # a shorter answer: the gateway decides at its end too
    return Sample(ttft, total, tier, to_k)


def gateway_config(base: dict[str, Any], mode: str, k: int, directory: Path) -> Path:
    config = json.loads(json.dumps(base))
    config["streaming"] = {"mode": mode, "decide_after_tokens": k}
    config.setdefault("auth", {})["api_keys_env"] = None
    path = directory / f"gateway-{mode}-{k}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(config: Path, directory: Path) -> Server:
    port = free_port()
    command = [*RECSERVE, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    return start(config.stem, command, f"http://127.0.0.1:{port}", "/readyz",
                 env={"RECSERVE_ADMIN_KEY": ""}, log=directory / f"{config.stem}.log", timeout_s=60)


def tiers(action: str, config: Path) -> bool:
    result = subprocess.run([*RECSERVE, "tiers", action, "--config", str(config)], capture_output=True,
                            text=True, timeout=900)
    return result.returncode == 0


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} ms" if values else "-"


def row(label: str, samples: list[Sample], with_k: bool, of: int) -> str:
    ttft = [s.ttft for s in samples if s.ttft is not None]
    to_k = " / ".join(ms([s.to_k[k] for s in samples]) for k in KS) if with_k else ""
    device = sum(1 for s in samples if s.tier in (None, "device"))
    share = f"{device}/{of}" if of else "-"
    return f"| {label} | {len(samples)} | {ms(ttft)} | {ms([s.total for s in samples])} | {to_k} | {share} |"


def report(direct: Target, pinned: Target, cascades: list[tuple[str, int, Target]]) -> list[str]:
    lines = ["| configuration | n | TTFT p50 | total p50 | time to 4 / 8 / 16 tokens p50 | served at device |",
             "|---|---|---|---|---|---|",
             row("direct from device tier", direct.samples, True, len(direct.samples)),
             row("gateway, pinned `recserve/device`", pinned.samples, False, len(pinned.samples))]
    for mode, k, target in cascades:
        label = "buffered" if mode == "buffered" else f"early, k = {k}"
        lines.append(row(f"gateway `recserve`, {label}: all", target.samples, False, len(target.samples)))
        device = [s for s in target.samples if s.tier == "device"]
        lines.append(row(f"gateway `recserve`, {label}: device-answered", device, False, 0))
    lines.append("")
    for mode, k, target in cascades:
        if mode != "early":
            continue
        pairs = [(s.ttft, d.to_k[k]) for s, d in zip(target.samples, direct.samples, strict=True)
                 if s.tier == "device" and s.ttft is not None]
        if not pairs:
            lines.append(f"- early k = {k}: no device-answered request — goal not checked")
            continue
        gateway_p50 = statistics.median(p[0] for p in pairs) * 1e3
        bound = statistics.median(d.to_k[k] for d in direct.samples) * 1e3 + GOAL_SLACK_MS
        paired = statistics.median(p[0] - p[1] for p in pairs) * 1e3
        verdict = "PASS" if gateway_p50 <= bound else "FAIL"
        lines.append(f"- early k = {k}: device-answered TTFT p50 {gateway_p50:.1f} ms vs direct time to {k} tokens "
                     f"p50 + {GOAL_SLACK_MS:.0f} ms = {bound:.1f} ms → **{verdict}** (paired per prompt: gateway "
                     f"TTFT - direct time to {k} tokens, median {paired:+.1f} ms, n = {len(pairs)})")
    return lines


def private_device(config_path: Path, directory: Path) -> RunningTier:
    """A llama-server like the configured device tier (binary, model, threads, context), on a free port."""
    device = next(t for t in local_tiers(load_config(config_path)) if t.name == "device")
    layout = default_layout()
    server = ensure_server(layout, report=lambda _: None)
    model = ensure_model(device.model, layout, report=lambda _: None)
    spec = TierSpec("device-bench", model, free_port(), device.local.threads or 1, device.local.ctx_size, 1)
    return start_tier(server, spec, directory, health_timeout_s=120)


def run(args: argparse.Namespace) -> None:
    config_path = Path(args.config).resolve()
    base = yaml.safe_load(config_path.read_text())
    started_tiers = False
    if not tiers("status", config_path):
        print("starting the local tiers (recserve tiers up) ...", file=sys.stderr)
        if not tiers("up", config_path):
            raise SystemExit("recserve tiers up failed")
        started_tiers = True
    gateways: list[Server] = []
    device_server: RunningTier | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="ttft-") as tmp:
            directory = Path(tmp)
            device = next(t for t in base["tiers"] if t["name"] == "device")
            if not args.shared_device:
                device_server = private_device(config_path, directory)
                device["base_url"] = f"{device_server.base_url}/v1"
                device.pop("local", None)
            modes = [("buffered", 8), *(("early", k) for k in KS)]
            for mode, k in modes:
                gateways.append(start_gateway(gateway_config(base, mode, k, directory), directory))
            direct = Target("direct", f"{device['base_url']}/chat/completions", device["model"])
            pinned = Target("pinned", f"{gateways[0].url}/v1/chat/completions", "recserve/device")
            cascades = [(mode, k, Target(f"{mode}-{k}", f"{server.url}/v1/chat/completions", "recserve"))
                        for (mode, k), server in zip(modes, gateways, strict=True)]
            targets = [direct, pinned, *(t for _, _, t in cascades)]
            load_before = os.getloadavg()
            limits = httpx.Limits(max_keepalive_connections=0)  # llama-server drops idle keep-alive sockets
            with httpx.Client(timeout=httpx.Timeout(args.timeout, connect=5), limits=limits) as client:
                for prompt in WARMUP:
                    prime(client, device, prompt)
                    for target in targets:
                        stream_once(client, target, prompt, args.max_tokens)  # discarded
                for i, prompt in enumerate(PROMPTS[:args.prompts]):
                    prime(client, device, prompt)
                    for target in targets[i % len(targets):] + targets[:i % len(targets)]:
                        target.samples.append(stream_once(client, target, prompt, args.max_tokens))
                    print(f"round {i + 1}/{args.prompts} done", file=sys.stderr)
            load_after = os.getloadavg()
            print("\n".join(report(direct, pinned, cascades)))
            where = "shared configured device tier" if args.shared_device else "private device llama-server"
            print(f"\nmachine: {os.cpu_count()} cores, load average (1 min) {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} after; {where}; {args.prompts} prompts, max_tokens {args.max_tokens}, "
                  f"temperature 0, {len(WARMUP)} warm-up requests per configuration discarded")
            for server in gateways:
                server.stop()
            if device_server is not None:
                stop(device_server, directory)
                device_server = None
    finally:
        for server in gateways:
            server.stop()
        if device_server is not None and device_server.process is not None:
            device_server.process.kill()
            device_server.process.wait(timeout=10)
        if started_tiers:
            tiers("down", config_path)


def prime(client: httpx.Client, device: dict[str, Any], prompt: str) -> None:
    """Send the prompt to the device once (max_tokens 1) so each configuration meets the same prompt cache."""
    body = {"model": device["model"], "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
            "temperature": 0}
    client.post(f"{device['base_url']}/chat/completions", json=body).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, len(PROMPTS) + 1),
                        metavar=f"1..{len(PROMPTS)}")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--shared-device", action="store_true",
                        help="measure the configured device tier instead of a private copy")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
