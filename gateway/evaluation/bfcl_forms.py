"""How tool requests reach a tier, compared on BFCL: the same items recorded with the tier in each tool
mode and call form (`eval/results/bfcl/forms/<form>/`), paired item by item.

`native` passes the tools through (`tool_mode: native`); `list` and `call_or_list` are
`tool_mode: constrained` with that `tool_call_form`. A form's folder holds what
`recserve eval bfcl record --first 10 ...` wrote through a gateway whose tiers were set that way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.evaluation.bfcl import Item
from gateway.evaluation.bfcl_record import trace_path
from gateway.evaluation.bfcl_replay import DEFAULT_ESTIMATOR, estimators, tokens_of, validity
from gateway.evaluation.code_agreement import auc
from gateway.evaluation.record import read_trace

FORMS = ("native", "list", "call_or_list")


def _rows(folder: Path, tier: str) -> dict[str, Mapping[str, Any]]:
    return {str(row["id"]): row for row in read_trace(trace_path(folder, tier))}


def _summary(rows: Sequence[Mapping[str, Any]], items: Mapping[str, Item]) -> dict[str, Any]:
    valid = validity(items)
    estimate = estimators()[DEFAULT_ESTIMATOR]
    by_category: dict[str, list[bool]] = {}
    scores, labels = [], []
    for row in rows:
        by_category.setdefault(str(row["category"]), []).append(bool(row.get("correct")))
        confidence = estimate(tokens_of(row)) if valid(row) else None
        if confidence is not None:
            scores.append(confidence)
            labels.append(bool(row.get("correct")))
    return {"accuracy": sum(bool(row.get("correct")) for row in rows) / len(rows),
            "by_category": {c: sum(v) / len(v) for c, v in by_category.items()},
            "calls": sum(bool((row.get("message") or {}).get("tool_calls")) for row in rows) / len(rows),
            "auroc": auc(scores, labels) if any(labels) and not all(labels) else None}


def compare(forms_folder: Path, items: Mapping[str, Item], tiers: Sequence[str]) -> dict[str, Any]:
    """Per tier recorded in every form: the items all forms answered, and each form's accuracy (in all and
    per category), share of answers with calls, and the default estimator's AUROC on them."""
    result: dict[str, Any] = {}
    for tier in tiers:
        recorded = {form: _rows(forms_folder / form, tier) for form in FORMS}
        if not all(recorded.values()):
            continue
        paired = [item_id for item_id in recorded[FORMS[0]] if all(item_id in rows for rows in recorded.values())]
        if paired:
            result[tier] = {"n": len(paired), "forms": {
                form: _summary([rows[item_id] for item_id in paired], items) for form, rows in recorded.items()}}
    return result


def render(compared: Mapping[str, Any]) -> list[str]:
    """The comparison as markdown lines (none when no tier is recorded in every form)."""
    if not compared:
        return []
    lines = ["## Tool-call forms", "",
             "The same items with the tier in each tool mode: `native` (tools passed through), or constrained "
             "by a JSON Schema with calls written as `list` (always a list) or `call_or_list` (one call, or a "
             f"list of two or more). AUROC: `{DEFAULT_ESTIMATOR}` over the valid answers.", "",
             "| tier | form | n | accuracy | " + " | ".join(_categories(compared)) + " | answers with calls | AUROC |",
             "|---|---|---:|---:|" + "---:|" * len(_categories(compared)) + "---:|---:|"]
    for tier, entry in compared.items():
        for form, summary in entry["forms"].items():
            cells = [pct(summary["by_category"].get(c)) for c in _categories(compared)]
            auroc = "—" if summary["auroc"] is None else f"{summary['auroc']:.3f}"
            lines.append(f"| {tier} | `{form}` | {entry['n']} | {pct(summary['accuracy'])} | " + " | ".join(cells)
                         + f" | {pct(summary['calls'])} | {auroc} |")
    return [*lines, ""]


def _categories(compared: Mapping[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in compared.values():
        for summary in entry["forms"].values():
            seen.update(dict.fromkeys(summary["by_category"]))
    return list(seen)


def pct(x: float | None) -> str:
    """A share as the BFCL tables print it; — for none."""
    return "—" if x is None else f"{x * 100:.1f}%"
