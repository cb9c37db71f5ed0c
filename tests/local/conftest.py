"""Fixtures for the local-tier tests: a throwaway cache, real wheels served from a local folder,
and a stand-in `llama-server` script for the supervisor's error paths."""

from __future__ import annotations

import base64
import hashlib
import socket
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.local.catalog import ModelSpec, WheelPart
from gateway.local.paths import CACHE_ENV, CacheLayout, default_layout
from gateway.local.server_build import ServerBinary
from gateway.local.supervisor import RunningTier, stop

WheelMaker = Callable[[str, str, dict[str, bytes]], Path]


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CacheLayout:
    """An empty cache root; RECSERVE_CACHE_DIR points at it so `commands.main` uses it too."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return CacheLayout(root)


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """A folder pip reads with `--no-index --find-links`, so no network is involved."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    return folder


@pytest.fixture
def make_wheel(wheelhouse: Path) -> WheelMaker:
    """Build a minimal, valid wheel `name==version` holding `members` in the wheelhouse."""

    def make(name: str, version: str, members: dict[str, bytes]) -> Path:
        dist = name.replace("-", "_")
        info = f"{dist}-{version}.dist-info"
        files = dict(members)
        files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        files[f"{info}/WHEEL"] = (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        record = [f"{path},sha256={_b64_digest(data)},{len(data)}" for path, data in files.items()]
        files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
        path = wheelhouse / f"{dist}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in files.items():
                archive.writestr(member, data)
        return path

    return make


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


SpecMaker = Callable[[str, list[tuple[str, str, str]], bytes], ModelSpec]


@pytest.fixture
def spec_for() -> SpecMaker:
    """Make a catalog entry for test wheels: (package, version, member) parts pinned to `content`."""

    def make(key: str, parts: list[tuple[str, str, str]], content: bytes) -> ModelSpec:
        return ModelSpec(
            key=key, description="test model", filename=f"{key}.gguf",
            parts=tuple(WheelPart(*part) for part in parts),
            sha256=hashlib.sha256(content).hexdigest(), size=len(content),
        )

    return make


@pytest.fixture
def local_pip(wheelhouse: Path) -> tuple[str, ...]:
    """pip options that read only the wheelhouse."""
    return ("--no-index", "--find-links", str(wheelhouse))


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port held by a real listening socket for the test's duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Return a loopback port nothing listens on right now."""

    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return pick


@pytest.fixture
def script_server(tmp_path: Path) -> Callable[[str], ServerBinary]:
    """A `llama-server` stand-in: a real executable script whose body the test chooses."""

    def make(body: str) -> ServerBinary:
        bin_dir = tmp_path / "fake-bin"
        bin_dir.mkdir(exist_ok=True)
        exe = bin_dir / "llama-server"
        exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body), encoding="utf-8")
        exe.chmod(0o755)
        return ServerBinary(exe, bin_dir)

    return make


@pytest.fixture
def healthy_server(script_server: Callable[[str], ServerBinary]) -> ServerBinary:
    """A stand-in that serves /health like llama-server (to exercise start/stop/status by PID)."""
    return script_server(_HEALTHY_SERVER)


_HEALTHY_SERVER = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}')
    def log_message(self, *args):
        pass
print("listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


# The real-model suites (marked `realmodel`): the real cache and the three real tiers, per module.
@pytest.fixture(scope="module")
def real_cache() -> CacheLayout:
    return default_layout()


@pytest.fixture(scope="module")
def real_tiers(real_tier_list: list[RunningTier]) -> dict[str, RunningTier]:
    """device, edge and cloud by name: the session's real tiers (tests/conftest.py), started once."""
    return {tier.name: tier for tier in real_tier_list}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A stand-in model file (the supervisor checks it exists, the stand-in server ignores it)."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def started(run_dir: Path) -> Iterator[list[RunningTier]]:
    """Tiers a test starts; always stopped afterwards."""
    tiers: list[RunningTier] = []
    yield tiers
    for tier in tiers:
        stop(tier, run_dir)
