"""The package as a user installs it: `pip install .` into a clean venv gives a `recserve serve` that
answers /healthz (runtime dependencies are enough to serve), and `pip install '.[eval]'` adds what
`recserve eval` needs. Bounded: every pip call and the server start have a timeout."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("gateway", "policies", "pyproject.toml", "README.md")
PIP_TIMEOUT_S = 600

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A venv with nothing but pip, and a copy of the sources to install from (no build files left in the repo)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    venv.EnvBuilder(with_pip=True).create(base / "venv")
    yield base / "venv" / "bin", source


def pip_install(bin_dir: Path, requirement: str, cwd: Path) -> None:
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           requirement], cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_runtime_install_serves(clean_venv: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, source = clean_venv
    pip_install(bin_dir, ".", source)
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, timeout=60, check=True).stdout.lower()
    for extra_only in ("aiohttp", "matplotlib", "pyarrow", "litellm", "numpy"):
        assert f"{extra_only}==" not in installed, f"{extra_only} came with the runtime install"
    config = tmp_path / "config.yaml"
    config.write_text("tiers:\n  - {name: device, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
                      "auth: {api_keys_env: null, admin_key_env: null}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    server = subprocess.Popen([str(bin_dir / "recserve"), "serve", "--config", str(config), "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        version = subprocess.run([str(bin_dir / "recserve"), "--version"], capture_output=True, text=True,
                                 env=env, timeout=60, check=True).stdout.split()[-1]
        assert wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60).json() == {
            "status": "ok", "recserve_version": version}
        models = wait_http_ok(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert "recserve/device" in {m["id"] for m in models["data"]}
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "Traceback" not in stderr.decode(errors="replace")
    # Without the extra, `recserve eval` says which extra to install instead of failing with a traceback.
    bare = subprocess.run([str(bin_dir / "recserve"), "eval", "report", "--help"], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert bare.returncode == 2 and "recserve[eval]" in bare.stderr, bare.stderr


def test_eval_extra_gives_recserve_eval(clean_venv: tuple[Path, Path]) -> None:
    bin_dir, source = clean_venv
    pip_install(bin_dir, ".[eval]", source)
    done = subprocess.run([str(bin_dir / "recserve"), "eval", "report", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage" in done.stdout.lower()
    probe = "import matplotlib, pyarrow, openai, gateway.evaluation.report"
    subprocess.run([str(bin_dir / "python"), "-c", probe], timeout=120, check=True)

