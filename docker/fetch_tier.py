"""Image build step for a llama.cpp tier: build `llama-server` and fetch one pinned model.

Reuses the gateway's own local-tier code (the same build flags and sha256 pins as `recserve tiers up`),
then lays the result out at fixed paths for the runtime stage:
  /opt/tier/bin/llama-server (+ its shared libraries)   /opt/tier/model.gguf

    python docker/fetch_tier.py smollm2-135m
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from gateway.local.catalog import lookup
from gateway.local.models import ensure_model
from gateway.local.paths import CacheLayout
from gateway.local.server_build import ensure_server

OUT = Path("/opt/tier")


def main(model_key: str) -> int:
    layout = CacheLayout(Path("/tmp/recserve-cache"))
    server = ensure_server(layout, report=print)
    model = ensure_model(lookup(model_key), layout, report=print)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copytree(server.lib_dir, OUT / "bin", symlinks=True)
    shutil.move(str(model), OUT / "model.gguf")
    shutil.rmtree(layout.root)  # pip caches and the build tree stay out of the image
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
