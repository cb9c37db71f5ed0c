"""`recserve serve | config check | tiers | eval | --version`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config.loading import ConfigError, load_config
from gateway.config.schema import GatewayConfig


def _report(source: str, errors: Sequence[str]) -> None:
    print(f"config error in {source}:", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)


def _load_or_report(path: str) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _report(exc.source, exc.errors)
        return None


def _serve(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return 2
    import os

    import uvicorn

    from gateway.server.workers import (
        WORKER_FACTORY,
        configure_logging,
        uvicorn_options,
        worker_environment,
        workers_problem,
    )

    workers = args.workers if args.workers is not None else config.server.workers
    problem = workers_problem(config, workers)
    if problem is not None:
        _report(args.config, [problem])
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    options = uvicorn_options(config, args.log_level)
    if workers == 1:
        from gateway.server.app import create_app

        configure_logging(args.log_level, config.logging.access_log)
        uvicorn.run(create_app(config, config_path=args.config), host=host, port=port, **options)
        return 0
    # Spawned workers build their own app from the file (see gateway.server.workers).
    os.environ.update(worker_environment(args.config, args.log_level))
    configure_logging(args.log_level, access_log=False)  # the supervisor's own lines
    uvicorn.run(WORKER_FACTORY, factory=True, workers=workers, host=host, port=port, **options)
    return 0


def _config_check(args: argparse.Namespace) -> int:
    config = _load_or_report(args.path)
    if config is None:
        return 2
    from gateway.server.workers import workers_problem

    problem = workers_problem(config, config.server.workers)
    if problem is not None:
        _report(args.path, [problem])
        return 2
    names = " > ".join(t.name for t in config.tiers)
    print(f"{args.path}: OK ({len(config.tiers)} tiers: {names}; default policy {config.policy.default})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recserve", description="RecServe multi-tier LLM gateway")
    parser.add_argument("--version", action="version", version=f"recserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default="config.yaml")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=int, choices=range(1, 65), metavar="N",
                       help="gateway processes on the one port (default: server.workers, 1)")
    serve.set_defaults(handler=_serve)

    config = commands.add_parser("config", help="config tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file")
    check.add_argument("path")
    check.set_defaults(handler=_config_check)

    commands.add_parser("tiers", help="start/stop/inspect the local llama.cpp tiers (tiers --help)",
                        add_help=False)
    commands.add_parser("eval", help="record / replay / live evaluation on real datasets (eval --help)",
                        add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["tiers"]:
        # The local-tier commands own their own argument parsing.
        from gateway.local.commands import main as tiers_main

        return tiers_main(arguments[1:])
    if arguments[:1] == ["eval"]:
        try:
            from gateway.evaluation.commands import main as eval_main
        except ModuleNotFoundError as missing:
            print(f"recserve eval needs the `eval` extra ({missing.name} is not installed): "
                  "pip install 'recserve[eval]'", file=sys.stderr)
            return 2
        return eval_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
