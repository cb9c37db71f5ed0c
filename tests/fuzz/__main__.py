"""`python -m tests.fuzz [--max-examples N]`: the schemathesis CLI against a live gateway over
scripted tiers, with the completed schema of `test_openapi`; prints schemathesis's own summary."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.app import create_app
from gateway.config import parse_config
from tests.fuzz.test_openapi import TIER_NAMES, _config, completed_schema
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--max-examples", type=int, default=200)
    args = parser.parse_args(argv)
    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in TIER_NAMES}
    server = UvicornThread(create_app(parse_config(_config({n: t.base_url for n, t in tiers.items()})))).start()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            path = Path(workdir) / "openapi.json"
            path.write_text(json.dumps(completed_schema()))
            command = [str(Path(sys.executable).parent / "schemathesis"), "run", str(path), "--url", server.base_url,
                       "--checks", "not_a_server_error,response_schema_conformance",
                       "--include-path-regex", r"^/(v1/|healthz|readyz)",
                       "--max-examples", str(args.max_examples), "--request-timeout", "15"]
            return subprocess.run(command, check=False, timeout=900).returncode
    finally:
        server.stop()
        for tier in tiers.values():
            tier.stop()


if __name__ == "__main__":
    sys.exit(main())
