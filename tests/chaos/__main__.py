"""`python -m tests.chaos [--full] [--only NAME ...]`: run the chaos scenarios and print the table."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from tests.chaos.report import ScenarioResult, table
from tests.chaos.scenarios import CI, FULL, SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full scale (default: the short CI scale)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--duration", type=float, help="override seconds of load per scenario")
    parser.add_argument("--clients", type=int, help="override concurrent clients")
    args = parser.parse_args(argv)
    scale = FULL if args.full else CI
    if args.duration:
        scale = replace(scale, duration_s=args.duration)
    if args.clients:
        scale = replace(scale, concurrency=args.clients)
    results: list[ScenarioResult] = []
    for name in args.only or list(SCENARIOS):
        started = time.monotonic()
        print(f"== {name}: {scale.duration_s:g} s at {scale.concurrency} clients", flush=True)
        results.append(SCENARIOS[name](scale))
        print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
    print(table(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
