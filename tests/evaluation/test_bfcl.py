"""BFCL v4 out of the `bfcl-eval` wheel (fetched with pip, never installed): items as OpenAI tool requests,
BFCL's own AST checker as the grader, and the recorder through a real gateway."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.evaluation import bfcl
from gateway.evaluation.bfcl_record import ask, record, rows_by_item
from gateway.local.paths import default_layout
from tests.conftest import TIER_NAMES, GatewayStarter, base_config, tier_entry
from tests.support.scripted_tier import ThreadedTier


@pytest.fixture(scope="module")
def root() -> Path:
    return bfcl.ensure_cached(default_layout())


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "type": "function",
            "function": {"name": bfcl.tool_name(name), "arguments": json.dumps(arguments)}}


def _reference_answer(item: bfcl.Item) -> dict[str, Any]:
    """The first accepted value of every parameter BFCL's possible answer gives."""
    assert item.ground_truth is not None
    calls = []
    for entry in item.ground_truth:
        ((name, params),) = entry.items()
        calls.append(_call(name, {k: v[0] for k, v in params.items() if v and v[0] != ""}))
    return {"content": None, "tool_calls": calls}


@pytest.mark.parametrize("category", [c for c in bfcl.CATEGORIES if c not in bfcl.NO_CALL_CATEGORIES])
def test_the_checker_accepts_the_possible_answers_and_refuses_wrong_ones(root: Path, category: str) -> None:
    checker = bfcl.Checker(root)
    items = bfcl.load_items(root, category)
    right = sum(checker.correct(item, _reference_answer(item)) for item in items)
    # A few possible answers' first values do not satisfy BFCL's own type checks (e.g. an int for a float in
    # a list): the checker is BFCL's, unchanged.
    assert right >= 0.9 * len(items), (category, right, len(items))
    item = next(i for i in items if checker.correct(i, _reference_answer(i)))
    wrong = _reference_answer(item)
    first = wrong["tool_calls"][0]["function"]
    first["name"] = first["name"] + "_other"
    assert not checker.correct(item, wrong)
    assert not checker.correct(item, {"content": "prose instead of a call", "tool_calls": []})
    broken = _reference_answer(item)
    broken["tool_calls"][0]["function"]["arguments"] = '{"cut off'
    assert not checker.correct(item, broken)


def test_irrelevance_is_right_only_without_a_call(root: Path) -> None:
    checker = bfcl.Checker(root)
    item = bfcl.load_items(root, "irrelevance")[0]
    assert checker.correct(item, {"content": "None of the tools can answer that.", "tool_calls": []})
    offered = item.functions[0]["name"]
    assert not checker.correct(item, {"content": None, "tool_calls": [_call(offered, {})]})


def test_items_become_openai_tools_in_json_schema_terms(root: Path) -> None:
    bfcl_only = {"dict", "float", "tuple", "any"}
    seen_dotted = False
    for category in bfcl.CATEGORIES:
        for item in bfcl.load_items(root, category):
            for tool, function in zip(bfcl.tools(item), item.functions, strict=True):
                name = tool["function"]["name"]
                seen_dotted |= "." in function["name"]
                assert "." not in name and name == function["name"].replace(".", "_")
                types = set()

                def walk(node: Any, types: set[str] = types) -> None:
                    if isinstance(node, dict):
                        if isinstance(node.get("type"), str):
                            types.add(node["type"])
                        for value in node.values():
                            walk(value)
                    elif isinstance(node, list):
                        for value in node:
                            walk(value)

                walk(tool["function"]["parameters"])
                assert not types & bfcl_only, (item.id, types)
    assert seen_dotted


def test_the_sample_is_seeded_and_interleaves_the_categories(root: Path) -> None:
    first = bfcl.sample(root, 5)
    assert [i.id for i in first] == [i.id for i in bfcl.sample(root, 5)]
    assert [i.id for i in first] != [i.id for i in bfcl.sample(root, 5, seed=1)]
    assert Counter(i.category for i in first) == dict.fromkeys(bfcl.CATEGORIES, 5)
    assert [i.category for i in first[:len(bfcl.CATEGORIES)]] == list(bfcl.CATEGORIES)


def test_the_first_of_each_category_come_early_in_the_fuller_sample(root: Path) -> None:
    full = bfcl.sample(root, 20)
    first = bfcl.first_of_each(full, 3)
    assert Counter(i.category for i in first) == dict.fromkeys(bfcl.CATEGORIES, 3)
    assert [i.id for i in first] == [i.id for i in full[:len(first)]]  # interleaved: the fuller run's start


def test_the_recorder_keeps_each_tiers_call_logprobs_and_verdict(start_gateway: GatewayStarter,
                                                                 tiers: dict[str, ThreadedTier],
                                                                 root: Path, tmp_path: Path) -> None:
    config = base_config(tiers)
    config["tiers"] = [tier_entry(tiers[name], tool_mode="constrained") for name in TIER_NAMES]
    gateway = start_gateway(config=config)
    area = next(i for i in bfcl.load_items(root, "simple_python") if i.id == "simple_python_0")
    right = '{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}'
    wrong = '{"name": "calculate_triangle_area", "arguments": {"base": 7, "height": 5}}'
    scripted = bfcl.Item("scripted_0", "simple_python", [{"role": "user", "content": (
        f"{area.messages[0]['content']} [device:answer={wrong}][edge:answer={right}][cloud:answer={right}]")}],
        area.functions, area.ground_truth)
    checker = bfcl.Checker(root)
    record(gateway.url, [scripted], tmp_path, checker, say=lambda _: None)
    rows = rows_by_item(tmp_path)["scripted_0"]
    assert {tier: rows[tier]["correct"] for tier in TIER_NAMES} == {"device": False, "edge": True, "cloud": True}
    edge = rows["edge"]
    assert edge["message"]["tool_calls"][0]["function"]["name"] == "calculate_triangle_area"
    assert edge["tokens"] and edge["header_confidence"] == pytest.approx(0.9)
    assert tiers["edge"].requests[-1].json["response_format"]["type"] == "json_schema"
    # Resumes: a second run asks nothing again.
    before = len(tiers["cloud"].requests)
    record(gateway.url, [scripted], tmp_path, checker, say=lambda _: None)
    assert len(tiers["cloud"].requests) == before
    with gateway.sdk() as client:
        broken = bfcl.Item("scripted_1", "simple_python", [{"role": "user", "content": "x [edge:status=500]"}],
                           area.functions, area.ground_truth)
        failed = ask(client, broken, "edge", checker)
    assert failed["correct"] is False and "error" in failed
