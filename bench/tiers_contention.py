"""Tokens/s of each local tier alone and with all tiers generating at once, before and after placement.

Each variant starts the config's local tiers the way users do, `recserve tiers up` (on free ports,
with a run folder of its own, so tiers `make run` started are never touched), then, `--repeats`
times: every tier alone for `--seconds`, then all tiers at once, one client per tier sending
back-to-back chat completions of `--max-tokens` tokens (temperature 0, `ignore_eos`, so every
answer has that length). In the busy phase every client keeps going until each tier has finished
at least two requests and `--seconds` have passed; only requests that ended before the first
client stopped count, so each counted request ran with all tiers busy.

tokens/s is llama.cpp's own generation speed (timings: predicted tokens / predicted ms), summed over
a phase's requests; the medians over repeats are printed, with the ratio busy/alone per tier and
the 1-minute load average seen. Variants:

- `before`: the threads the shipped config had (device 1, edge 1, cloud 2), not pinned, polling;
- `after`: `threads` unset, so `recserve tiers up` derives them (gateway/local/placement.py).

    python -m bench.tiers_contention                         # both variants, 3 repeats
    python -m bench.tiers_contention --variants after --repeats 1 --seconds 8
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from bench.procs import free_port
from gateway.local.paths import RUN_ENV

BEFORE_THREADS = {"device": 1, "edge": 1, "cloud": 2}
PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring."


@dataclass
class Phase:
    """Requests of one tier in one phase: generated tokens and the time llama.cpp spent on them."""

    tokens: int = 0
    ms: float = 0.0
    requests: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.ms * 1000 if self.ms else 0.0


@dataclass
class Results:
    alone: dict[str, list[float]] = field(default_factory=dict)
    busy: dict[str, list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    placements: list[str] = field(default_factory=list)


def _variant_config(base: dict[str, object], variant: str) -> dict[str, object]:
    config = copy.deepcopy(base)
    tiers = config["tiers"]
    assert isinstance(tiers, list)
    for tier in tiers:
        local = tier.get("local")
        if not local:
            continue
        port = free_port()
        local["port"] = port
        tier["base_url"] = f"http://127.0.0.1:{port}/v1"
        local.pop("threads", None)
        if variant == "before":
            local["threads"] = BEFORE_THREADS.get(tier["name"], 1)
    return config


def _one(client: httpx.Client, url: str, max_tokens: int) -> tuple[int, float]:
    body = {"model": "local", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}
    answer = client.post(url + "/v1/chat/completions", json=body)
    answer.raise_for_status()
    timings = answer.json()["timings"]
    return int(timings["predicted_n"]), float(timings["predicted_ms"])


def _drive(urls: dict[str, str], seconds: float, max_tokens: int) -> dict[str, Phase]:
    """One client per tier in `urls`, all at once, until each finished two requests and `seconds` passed."""
    phases = {name: Phase() for name in urls}
    stop = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(name: str, url: str) -> None:
        with httpx.Client(timeout=600) as http:
            while not stop.is_set():
                tokens, ms = _one(http, url, max_tokens)
                with lock:
                    if stop.is_set():
                        return  # ended after another client stopped: not fully under load
                    phase = phases[name]
                    phase.tokens += tokens
                    phase.ms += ms
                    phase.requests += 1
                    if time.monotonic() >= deadline and all(p.requests >= 2 for p in phases.values()):
                        stop.set()
                        done.set()

    threads = [threading.Thread(target=client, args=(name, url), daemon=True) for name, url in urls.items()]
    for thread in threads:
        thread.start()
    done.wait(timeout=seconds + 900)
    stop.set()
    for thread in threads:
        thread.join(timeout=900)
    return phases


def _run_variant(variant: str, base: dict[str, object], args: argparse.Namespace, folder: Path) -> Results:
    config = _variant_config(base, variant)
    path = folder / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, RUN_ENV: str(folder / f"run-{variant}")}
    cli = [sys.executable, "-m", "gateway.cli", "tiers"]
    up = subprocess.run([*cli, "up", "--config", str(path)], env=env, capture_output=True, text=True,
                        timeout=1800, check=False)
    results = Results(placements=[line for line in up.stdout.splitlines() if ": up on " in line])
    try:
        if up.returncode != 0:
            raise RuntimeError(f"tiers up ({variant}) failed:\n{up.stdout}\n{up.stderr}")
        tiers = [t for t in config["tiers"] if isinstance(t, dict) and t.get("local")]  # type: ignore[attr-defined]
        urls = {t["name"]: f"http://127.0.0.1:{t['local']['port']}" for t in tiers}
        for url in urls.values():  # warm-up: first requests page the model in
            with httpx.Client(timeout=600) as http:
                _one(http, url, 4)
        for repeat in range(args.repeats):
            for name, url in urls.items():
                results.loads.append(os.getloadavg()[0])
                alone = _drive({name: url}, args.seconds, args.max_tokens)[name]
                results.alone.setdefault(name, []).append(alone.tokens_per_s)
            results.loads.append(os.getloadavg()[0])
            busy = _drive(urls, args.seconds, args.max_tokens)
            results.loads.append(os.getloadavg()[0])
            for name, phase in busy.items():
                results.busy.setdefault(name, []).append(phase.tokens_per_s)
            print(f"{variant} repeat {repeat + 1}: alone " +
                  ", ".join(f"{n} {results.alone[n][-1]:.1f}" for n in urls) + "; busy " +
                  ", ".join(f"{n} {busy[n].tokens_per_s:.1f}" for n in urls) +
                  f" tokens/s; load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    finally:
        subprocess.run([*cli, "down", "--config", str(path)], env=env, capture_output=True, timeout=120,
                       check=False)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tiers_contention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    rows: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="recserve-contention-") as tmp:
        for variant in args.variants.split(","):
            results = _run_variant(variant, base, args, Path(tmp))
            for name in results.alone:
                alone = statistics.median(results.alone[name])
                busy = statistics.median(results.busy[name])
                ratios = [b / a for a, b in zip(results.alone[name], results.busy[name], strict=True) if a]
                rows.append(f"| {variant} | {name} | {alone:.1f} | {busy:.1f} | {busy / alone:.0%} | "
                            f"{min(ratios):.0%}-{max(ratios):.0%} |")
            notes.append(f"{variant}: load average (1 min) {min(results.loads):.2f}-{max(results.loads):.2f}; "
                         + "; ".join(line.split(": up on ")[0] + ": " + line.split(", ", 1)[1].split(" (pid")[0]
                                     for line in results.placements))
    print(f"{args.repeats} repeats, medians; {args.max_tokens} tokens per request; "
          f"{len(os.sched_getaffinity(0))} cores; {platform.python_version()}")
    print()
    print("| variant | tier | alone tokens/s | all busy tokens/s | busy / alone | busy / alone per repeat |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
