"""`recserve eval record | replay | live | report | seeds | code | bfcl`: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import openai

if TYPE_CHECKING:
    from gateway.evaluation.replay_quality import QualityOptions

DEFAULT_GATEWAY = "http://127.0.0.1:8000/v1"
RESULTS = Path("eval/results")
CODE_TRACE = RESULTS / "code" / "humaneval.jsonl.gz"
BFCL_TRACES = RESULTS / "bfcl"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _client(gateway: str, timeout_s: float = 300.0) -> openai.OpenAI:
    # The gateway is usually open (auth.api_keys_env null); a key from the environment still works.
    return openai.OpenAI(base_url=gateway, api_key=os.environ.get("OPENAI_API_KEY", "eval"),
                         timeout=timeout_s, max_retries=0)


def _record(args: argparse.Namespace) -> int:
    from gateway.evaluation.datasets import load_examples
    from gateway.evaluation.record import Scorer, label_scorer, record
    from gateway.local.paths import default_layout

    started = time.monotonic()
    score: Scorer = label_scorer
    if args.dataset == "humaneval":
        from gateway.evaluation import humaneval

        problems = humaneval.load_problems(default_layout(), report=_say)
        examples = humaneval.examples(problems, args.limit)
        score = humaneval.sandbox_scorer(problems)
    else:
        examples = load_examples(default_layout(), args.dataset, args.limit, report=_say)
    out = Path(args.out) if args.out else RESULTS / "traces" / f"{args.dataset}.jsonl"
    with _client(args.gateway) as client:
        ran = record(examples, out, client, report=_say, score=score)
    _say(f"{args.dataset}: recorded {ran} new examples ({len(examples) - ran} already in {out}) "
         f"in {time.monotonic() - started:.1f} s")
    return 0


def _quality_options(args: argparse.Namespace) -> QualityOptions:
    from gateway.evaluation.replay_quality import WARMUP_ANSWERS, QualityOptions

    rates = [rate for rate in args.probe_rates if rate != args.probe_rate]
    options = QualityOptions(targets=tuple(args.targets), probe_rate=args.probe_rate, other_probe_rates=tuple(rates),
                             seed=args.seed, warmup_probes=args.warmup_probes, warmup_answer=args.warmup_answer,
                             other_warmup_answers=tuple(a for a in WARMUP_ANSWERS if a != args.warmup_answer))
    return replace(options, other_warmups=tuple(w for w in args.warmup_sweep if w != options.warmup))


def _add_quality_options(parser: argparse.ArgumentParser) -> None:
    from gateway.evaluation.replay_quality import PROBE_RATES, TARGETS, WARMUP_ANSWERS, WARMUPS, QualityOptions

    group = parser.add_argument_group("quality policy (recserve/quality)")
    group.add_argument("--seed", type=int, default=0, help="seed of the simulated probes' RNG (same seed, same result)")
    group.add_argument("--probe-rate", type=float, default=QualityOptions().probe_rate,
                       help="probe rate of the full target x β sweep (default: the config's policy.quality.probe_rate)")
    group.add_argument("--probe-rates", type=float, nargs="*", default=list(PROBE_RATES),
                       help="further probe rates, swept over the targets at β=0.3 (sensitivity)")
    group.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="policy.quality.target values")
    group.add_argument("--warmup-probes", type=_non_negative, default=None,
                       help="policy.quality.warmup_probes of every quality run but the warm-up sweep "
                            "(default: the config's, min_probes)")
    group.add_argument("--warmup-sweep", type=_non_negative, nargs="*", default=list(WARMUPS),
                       help="further warmup_probes values, swept over the targets at β=0.3 (sensitivity)")
    group.add_argument("--warmup-answer", choices=WARMUP_ANSWERS, default=QualityOptions().warmup_answer,
                       help="policy.quality.warmup_answer of every quality run (default: the config's); the other "
                            "one is swept over the targets at β=0.3 for the top-vs-kept comparison")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _replay(args: argparse.Namespace) -> int:
    from gateway.evaluation.sweeps import replay_trace_file

    result = replay_trace_file(Path(args.trace), _quality_options(args))
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    from gateway.evaluation.report import policy_table

    print(policy_table(result))
    return 0


def _live(args: argparse.Namespace) -> int:
    from gateway.config.loading import load_config
    from gateway.evaluation.live import run_live

    config = load_config(args.config)
    with _client(args.gateway) as client:
        summary = run_live([Path(t) for t in args.traces], client, config=config, policy=args.policy, report=_say)
    text = json.dumps(summary, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "requests"}, indent=2))
    return 0 if summary["served_tier_matches"] == summary["requests_total"] else 1


def _report(args: argparse.Namespace) -> int:
    from gateway.config.loading import load_config
    from gateway.evaluation.report import write_report
    from gateway.evaluation.report_savings import DEFAULT_RATES, rates_from_config

    rates = rates_from_config(load_config(args.config)) if args.config else DEFAULT_RATES
    written = write_report(Path(args.traces), Path(args.out), _quality_options(args), rates)
    code_trace = Path(args.code_trace)
    if code_trace.exists():
        # The coding workload is scored by its tests, not by a label checker, and joins no mixed
        # stream: its trace lives apart and its sections are appended to the same results.md.
        from gateway.evaluation.code_report import write_code_report

        sections = write_code_report(code_trace, code_trace.parent)
        md_path = Path(args.out) / "results.md"
        md_path.write_text(md_path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + "\n".join(sections),
                           encoding="utf-8")
        written.append(code_trace.parent / "humaneval.json")
    for path in written:
        _say(f"wrote {path}")
    return 0


def _code(args: argparse.Namespace) -> int:
    from gateway.evaluation.code_report import write_code_report
    from gateway.evaluation.humaneval import compact_row
    from gateway.evaluation.record import read_trace, write_gzipped

    trace = Path(args.trace)
    if trace.suffix == ".jsonl":  # a finished recording: keep the committed (compact, gzipped) form beside it
        trace = write_gzipped([compact_row(row) for row in read_trace(trace)], trace.with_name(trace.name + ".gz"))
    print("\n".join(write_code_report(trace, Path(args.out) if args.out else trace.parent)))
    return 0


def _seeds(args: argparse.Namespace) -> int:
    from gateway.evaluation.seeds import render, write_seed_table

    traces = sorted(Path(args.traces).glob("*.jsonl*"))
    rows = write_seed_table(traces, Path(args.out))
    print(render(rows))
    _say(f"wrote {Path(args.out) / 'seeds.md'} and seeds.json")
    return 0 if all(row["holds"] for row in rows) else 1


def _bfcl_list(args: argparse.Namespace) -> int:
    from gateway.evaluation import bfcl
    from gateway.local.paths import default_layout

    root = bfcl.ensure_cached(default_layout(), report=_say)
    for category in bfcl.CATEGORIES:
        items = bfcl.load_items(root, category)
        right = "no call" if category in bfcl.NO_CALL_CATEGORIES else "BFCL's AST checker"
        print(f"{category:<18} {len(items):>5} items   right: {right}")
    return 0


def _bfcl_record(args: argparse.Namespace) -> int:
    from gateway.evaluation import bfcl, bfcl_record
    from gateway.local.paths import default_layout

    root = bfcl.ensure_cached(default_layout(), report=_say)
    items = bfcl.sample(root, args.per_category, categories=args.categories)
    if args.first is not None:
        items = bfcl.first_of_each(items, args.first)
    bfcl_record.record(args.gateway, items, Path(args.out), bfcl.Checker(root), tiers=args.tiers, say=_say)
    return 0


def _bfcl_report(args: argparse.Namespace) -> int:
    from gateway.evaluation import bfcl, bfcl_report
    from gateway.local.paths import default_layout

    root = bfcl.ensure_cached(default_layout(), report=_say)
    items = {item.id: item for category in bfcl.CATEGORIES for item in bfcl.load_items(root, category)}
    for path in bfcl_report.write_report(Path(args.traces), Path(args.out or args.traces), items):
        _say(f"wrote {path}")
    return 0


def _add_bfcl(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.evaluation.bfcl import CATEGORIES
    from gateway.evaluation.bfcl_record import TIERS

    bfcl = commands.add_parser("bfcl", help="function calling: BFCL v4 items through every tier, and the policies")
    steps = bfcl.add_subparsers(dest="step", required=True)
    steps.add_parser("list", help="the BFCL categories recorded and how each is graded").set_defaults(
        handler=_bfcl_list)
    rec = steps.add_parser("record", help="record BFCL items at every tier (resumes where it stopped)")
    rec.add_argument("--per-category", type=int, default=100, help="items drawn from each category (seeded)")
    rec.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES))
    rec.add_argument("--first", type=int, help="record only the first N of each category's sample")
    rec.add_argument("--tiers", nargs="+", choices=TIERS, default=list(TIERS), help="the tiers to record")
    rec.add_argument("--gateway", default=DEFAULT_GATEWAY, help="the gateway's /v1 base URL")
    rec.add_argument("--out", default=str(BFCL_TRACES), help="folder of the per-tier traces")
    rec.set_defaults(handler=_bfcl_record)
    rep = steps.add_parser("report", help="tier accuracy, estimator AUROC, policies over seeds; table and plot")
    rep.add_argument("--traces", default=str(BFCL_TRACES))
    rep.add_argument("--out", help="where bfcl.md, bfcl.json and the plot go (default: the traces' folder)")
    rep.set_defaults(handler=_bfcl_report)


def build_parser() -> argparse.ArgumentParser:
    """The `recserve eval` argument parser."""
    from gateway.evaluation.datasets import SPECS

    parser = argparse.ArgumentParser(prog="recserve eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser("record", help="run each example through every tier, write a trace")
    rec.add_argument("--dataset", required=True, choices=sorted([*SPECS, "humaneval"]))
    rec.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    rec.add_argument("--gateway", default=DEFAULT_GATEWAY, help="the gateway's /v1 base URL")
    rec.add_argument("--out", help="trace path (default eval/results/traces/<dataset>.jsonl)")
    rec.set_defaults(handler=_record)

    rep = commands.add_parser("replay", help="simulate every policy on a trace")
    rep.add_argument("trace")
    rep.add_argument("--json", help="write the full result here")
    _add_quality_options(rep)
    rep.set_defaults(handler=_replay)

    live = commands.add_parser("live", help="send a trace's examples through a fresh gateway, compare tiers")
    live.add_argument("traces", nargs="+", metavar="TRACE")
    live.add_argument("--gateway", default=DEFAULT_GATEWAY)
    live.add_argument("--config", default="config.yaml", help="the gateway's config (for its policy settings)")
    live.add_argument("--policy", choices=("recserve", "quality"), default="recserve",
                      help="the policy compared: model recserve, or recserve/quality")
    live.add_argument("--json", help="write the per-request comparison here")
    live.set_defaults(handler=_live)

    report = commands.add_parser("report", help="table, JSON and plots from every trace in a folder")
    report.add_argument("--traces", default=str(RESULTS / "traces"))
    report.add_argument("--out", default=str(RESULTS))
    report.add_argument("--config", default=None,
                        help="a gateway config whose tiers' price and uplink_weight cost the policies "
                             "(default: the Evaluation page's example rates)")
    report.add_argument("--code-trace", default=str(CODE_TRACE),
                        help="the HumanEval trace whose sections are appended to results.md (skipped if absent)")
    _add_quality_options(report)
    report.set_defaults(handler=_report)

    seeds = commands.add_parser("seeds", help="recserve/quality at its defaults on every classification trace "
                                              "and the mixed stream (by task, by workload), seeds 0-9")
    seeds.add_argument("--traces", default=str(RESULTS / "traces"))
    seeds.add_argument("--out", default=str(RESULTS))
    seeds.set_defaults(handler=_seeds)

    code = commands.add_parser("code", help="HumanEval: every policy on both line-ups, agreement measures")
    code.add_argument("--trace", default=str(CODE_TRACE), help="a HumanEval trace (.jsonl is gzipped beside it)")
    code.add_argument("--out", help="where humaneval.json goes (default: the trace's folder)")
    code.set_defaults(handler=_code)
    _add_bfcl(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `recserve eval`; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    code: int = args.handler(args)
    return code
