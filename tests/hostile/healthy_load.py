"""The concurrent healthy client, as its own process so the test process's GIL (busy reading a
flood) cannot add to the latencies it measures.

    python -m tests.hostile.healthy_load --base-url URL --model recserve/healthy

Calls the model in a loop with the official SDK until stdin closes, writing one line per event:
`S <start>` when a call starts, `E <start> <end> <error or ->` when it ends (CLOCK_MONOTONIC seconds,
comparable with the parent's time.monotonic()).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import openai

MAX_LIFETIME_S = 3600.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--pause-s", type=float, default=0.05)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def stop_at_eof() -> None:
        sys.stdin.read()  # the parent closes our stdin to stop us (or dies, which closes it too)
        stop.set()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    sdk = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=10)
    deadline = time.monotonic() + MAX_LIFETIME_S
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        print(f"S {started:.6f}", flush=True)
        error = "-"
        try:
            sdk.chat.completions.create(model=args.model, max_tokens=4,
                                        messages=[{"role": "user", "content": "background ping"}])
        except openai.OpenAIError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:120]}".replace("\n", " ")
        print(f"E {started:.6f} {time.monotonic():.6f} {error}", flush=True)
        stop.wait(args.pause_s)


if __name__ == "__main__":
    main()
