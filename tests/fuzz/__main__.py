"""`python -m tests.fuzz [--max-examples N]`: the schemathesis CLI against a live gateway over
scripted tiers, on the OpenAPI document the gateway itself serves; prints schemathesis's own summary."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from gateway.config.loading import parse_config
from gateway.server.app import create_app
from tests.fuzz.test_openapi import CHECKS, CLIENT_PATHS, TIER_NAMES, fuzz_config
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--max-examples", type=int, default=200)
    args = parser.parse_args(argv)
    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in TIER_NAMES}
    server = UvicornThread(create_app(parse_config(fuzz_config({n: t.base_url for n, t in tiers.items()})))).start()
    try:
        command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.base_url}/openapi.json",
                   "--checks", ",".join(check.__name__ for check in CHECKS),
                   "--include-path-regex", CLIENT_PATHS,
                   "--max-examples", str(args.max_examples), "--request-timeout", "15"]
        return subprocess.run(command, check=False, timeout=900).returncode
    finally:
        server.stop()
        for tier in tiers.values():
            tier.stop()


if __name__ == "__main__":
    sys.exit(main())
