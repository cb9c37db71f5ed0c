"""BFCL v4 (the Berkeley Function Calling Leaderboard) read offline out of the `bfcl-eval==2026.3.23`
wheel: its items as OpenAI tool requests, and grading with BFCL's own AST checker.

The wheel is only a container (its declared dependencies pull cloud SDKs and vector stores): it is
fetched with `pip download --no-deps`, never installed. The chosen categories' items and possible
answers, and the checker's own source files, are unpacked under `<cache>/datasets/bfcl-<version>/`.
The checker module (`eval_checker/ast_eval/ast_checker.py`) is imported from there as BFCL ships it;
the one module it imports that is not needed here, BFCL's registry of model handlers (which imports
every provider SDK), is stood in for by a registry with one entry saying the names it checks have
had their `.` replaced by `_` — exactly what is done to the names before they are sent as tools.
"""

from __future__ import annotations

import importlib
import json
import random
import shutil
import sys
import types
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.local.catalog import WheelPart
from gateway.local.models import download_wheel
from gateway.local.paths import CacheLayout

WHEEL = WheelPart("bfcl-eval", "2026.3.23", "")
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple")
# Categories with no possible answer: right is "no call at all".
NO_CALL_CATEGORIES = frozenset({"irrelevance"})
# The model name the checker is told; the stand-in registry maps it to "names had `.` replaced by `_`".
CHECKER_MODEL = "recserve"
_CHECKER_FILES = ("bfcl_eval/__init__.py", "bfcl_eval/constants/__init__.py", "bfcl_eval/constants/enums.py",
                  "bfcl_eval/constants/type_mappings.py", "bfcl_eval/eval_checker/__init__.py",
                  "bfcl_eval/eval_checker/ast_eval/__init__.py", "bfcl_eval/eval_checker/ast_eval/ast_checker.py",
                  "bfcl_eval/eval_checker/ast_eval/type_convertor/__init__.py",
                  "bfcl_eval/eval_checker/ast_eval/type_convertor/java_type_converter.py",
                  "bfcl_eval/eval_checker/ast_eval/type_convertor/js_type_converter.py")
# BFCL's parameter types that are not JSON Schema's.
_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


@dataclass(frozen=True, slots=True)
class Item:
    """One BFCL question: its conversation, the functions offered (BFCL's docs) and what is right."""

    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] | None  # None: no call is right (irrelevance)


def cache_dir(layout: CacheLayout) -> Path:
    return layout.datasets / f"bfcl-{WHEEL.version}"


def ensure_cached(layout: CacheLayout, report: Callable[[str], None] = lambda _: None) -> Path:
    """Fetch the wheel once (never installed) and unpack the categories and the checker; the folder."""
    target = cache_dir(layout)
    if (target / "complete").is_file():
        return target
    wheel_dir = layout.datasets / ".wheels-bfcl"
    report(f"fetching {WHEEL.requirement} (data and checker only; never installed)")
    wheel = download_wheel(WHEEL, wheel_dir, log_path=layout.datasets / "fetch.log", report=report, timeout_s=600)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        members = list(_CHECKER_FILES)
        for category in CATEGORIES:
            members.append(f"bfcl_eval/data/BFCL_v4_{category}.json")
            if category not in NO_CALL_CATEGORIES:
                members.append(f"bfcl_eval/data/possible_answer/BFCL_v4_{category}.json")
        with zipfile.ZipFile(wheel) as archive:
            for member in members:
                path = partial / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(member))
        (partial / "complete").write_text(WHEEL.requirement, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    return target


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_items(root: Path, category: str) -> list[Item]:
    """All items of one category, in the file's order."""
    data = root / "bfcl_eval" / "data"
    answers: dict[str, Any] = {}
    if category not in NO_CALL_CATEGORIES:
        answers = {row["id"]: row["ground_truth"] for row in _json_lines(data / "possible_answer" /
                                                                           f"BFCL_v4_{category}.json")}
    items = []
    for row in _json_lines(data / f"BFCL_v4_{category}.json"):
        turns = row["question"]
        items.append(Item(row["id"], category, list(turns[0]), list(row["function"]), answers.get(row["id"])))
    return items


def sample(root: Path, per_category: int, seed: int = 0,
           categories: Sequence[str] = CATEGORIES) -> list[Item]:
    """`per_category` items of each category (seeded; a category's order kept), interleaved so that a
    recording stopped early still covers every category about equally."""
    chosen: list[list[Item]] = []
    for category in categories:
        items = load_items(root, category)
        picks = sorted(random.Random(f"{seed}:{category}").sample(range(len(items)), min(per_category, len(items))))
        chosen.append([items[i] for i in picks])
    return [column[i] for i in range(max(map(len, chosen), default=0)) for column in chosen if i < len(column)]


def first_of_each(items: Sequence[Item], count: int) -> list[Item]:
    """The first `count` items of each category, in their order: a smaller recording whose items all
    come early in a fuller one of the same sample, so the two compare item by item."""
    seen: Counter[str] = Counter()
    kept = []
    for item in items:
        seen[item.category] += 1
        if seen[item.category] <= count:
            kept.append(item)
    return kept


def tool_name(name: str) -> str:
    """BFCL names may hold `.`, which OpenAI-style tool names may not."""
    return name.replace(".", "_")


def json_schema(node: Any) -> Any:
    """A BFCL parameter doc as JSON Schema: its own types mapped, recursively."""
    if isinstance(node, list):
        return [json_schema(value) for value in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            mapped = _TYPES.get(value, value)
            if mapped is not None:
                out[key] = mapped
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {name: json_schema(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") or isinstance(value, Mapping | list):
            out[key] = json_schema(value)
        else:
            out[key] = value
    return out


def tools(item: Item) -> list[dict[str, Any]]:
    """The item's functions as OpenAI `tools`."""
    return [{"type": "function", "function": {"name": tool_name(function["name"]),
                                              "description": function.get("description", ""),
                                              "parameters": json_schema(function.get("parameters", {}))}}
            for function in item.functions]


def calls_of(message: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A chat message's tool calls as BFCL's checker reads them, `[{name: {param: value}}]`; None when a
    call's arguments are not a JSON object (no answer the checker could read)."""
    raw = message.get("tool_calls") or []
    calls: list[dict[str, Any]] = []
    for call in raw if isinstance(raw, list) else []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            return None
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (ValueError, TypeError, RecursionError):
            return None
        if not isinstance(arguments, dict):
            return None
        calls.append({function["name"]: arguments})
    return calls


class Checker:
    """BFCL's own AST checker, imported from the unpacked wheel with a stand-in model registry."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._check: Callable[..., Mapping[str, Any]] | None = None
        self._python: Any = None

    def _load(self) -> Callable[..., Mapping[str, Any]]:
        if self._check is None:
            registry = types.ModuleType("bfcl_eval.constants.model_config")
            registry.MODEL_CONFIG_MAPPING = {  # type: ignore[attr-defined]
                CHECKER_MODEL: types.SimpleNamespace(underscore_to_dot=True)}
            sys.modules["bfcl_eval.constants.model_config"] = registry
            if str(self._root) not in sys.path:
                sys.path.insert(0, str(self._root))
            module = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
            self._python = importlib.import_module("bfcl_eval.constants.enums").Language.PYTHON
            self._check = module.ast_checker
        return self._check

    def correct(self, item: Item, message: Mapping[str, Any]) -> bool:
        """Whether `message` (a chat answer) is right by BFCL: the checker's verdict on its calls; for
        irrelevance, that it makes no call."""
        calls = calls_of(message)
        if item.ground_truth is None:
            return calls == []
        if not calls:
            return False
        check = self._load()
        try:
            verdict = check(item.functions, calls, item.ground_truth, self._python, item.category, CHECKER_MODEL)
        except Exception:
            return False
        return bool(verdict.get("valid"))
