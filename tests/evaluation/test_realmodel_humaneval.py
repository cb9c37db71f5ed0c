"""HumanEval end to end on a real tier (marker `realmodel`): the recorded prompt to the real
Qwen2.5-Coder-0.5B llama.cpp server, its answer run against the problem's tests in the sandbox.
Problem 0 is one the edge solves in the committed trace; greedy decoding gives the same answer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.evaluation import humaneval
from gateway.evaluation.record import chat_request
from gateway.local.catalog import lookup
from gateway.local.models import ensure_model
from gateway.local.paths import CacheLayout, default_layout
from gateway.local.server_build import ensure_server
from gateway.local.supervisor import RunningTier, TierSpec, start_tier, stop
from policies.confidence import response_confidence
from tests.local.realtiers import free_port

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTier]:
    layout = default_layout()
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    server = ensure_server(layout, report=say)
    model = ensure_model(lookup("qwen2.5-coder-0.5b"), layout, report=say)
    run_dir = tmp_path_factory.mktemp("run")
    tier = start_tier(server, TierSpec("edge", model, free_port(), 1), run_dir)
    yield tier
    stop(tier, run_dir)


def _problems(layout: CacheLayout) -> list[humaneval.Problem]:
    return humaneval.load_problems(layout, report=lambda line: print(line, file=sys.stderr))


def test_the_edge_solves_problem_0_and_its_answer_passes_in_the_sandbox(edge: RunningTier, tmp_path: Path) -> None:
    problems = _problems(default_layout())
    [example] = humaneval.examples(problems, 1)
    request = chat_request(example, "edge")
    assert request["extra_body"] == {"recserve": {"task": "generation", "workload": "humaneval"}}
    del request["extra_body"]  # the tier itself, not the gateway: no extension to strip
    with openai.OpenAI(base_url=f"{edge.base_url}/v1", api_key="none", max_retries=0, timeout=600) as client:
        completion = client.chat.completions.create(**request)
    answer = completion.choices[0].message.content or ""
    body = completion.model_dump(mode="json", exclude_none=True)
    confidence = response_confidence("generation", body["choices"], None)
    assert confidence is not None and 0.0 < confidence <= 1.0
    result = humaneval.run_problem(problems[0], answer)
    assert result.passed, (answer, result.stderr)
