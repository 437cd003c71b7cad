"""Command line: `python -m server serve|validate`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from server.settings import Limits, Settings, model_defaults


def _serve(args: argparse.Namespace) -> int:
    from server import native_memory
    from server.app import create_app
    from server.logs import configure_logging

    root = Path(args.model_repository)
    if not root.is_dir():
        print(f"error: model repository {root} is not a folder", file=sys.stderr)
        return 2
    if args.api_key_file and not Path(args.api_key_file).is_file():
        print(f"error: --api-key-file {args.api_key_file} is not a readable file", file=sys.stderr)
        return 2
    settings = Settings(
        model_repository=root.resolve(),
        host=args.host,
        port=args.port,
        log_format=args.log_format,
        log_level=args.log_level,
        settle_seconds=args.settle_seconds,
        settle_max_seconds=args.settle_max_seconds,
        rescan_seconds=args.rescan_seconds,
        load_workers=args.load_workers,
        request_timeout_s=args.request_timeout,
        limits=Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}),
        api_key_file=Path(args.api_key_file).resolve() if args.api_key_file else None,
        api_key=os.environ.get("API_KEY") or None,
        protect_metrics=args.protect_metrics,
        shutdown_timeout_s=args.shutdown_timeout,
        allowed_origins=args.allowed_origins,
        allowed_methods=args.allowed_methods,
        allowed_headers=args.allowed_headers,
        model_defaults=model_defaults(max_queued_requests=args.max_queued_requests,
                                      stall_timeout_s=args.stall_timeout, max_queued_items=args.max_queued_items),
    )
    configure_logging(settings.log_format, settings.log_level)
    native_memory.limit_primitive_cache()  # before any model compiles
    app = create_app(settings)
    # One process: loaded pipelines live in this process's memory, and OpenVINO uses every core itself.
    app.run(host=settings.host, port=settings.port, single_process=True, access_log=False, motd=False)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from server.repository.validate import validate_repository

    problems = validate_repository(Path(args.directory))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print("repository is valid")
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository")
    serve.add_argument("--model-repository", required=True, help="folder to watch and serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-format", choices=["json", "console", "auto"], default="auto",
                       help="json lines (default when not on a terminal) or console")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.add_argument("--settle-seconds", type=_positive, default=1.0,
                       help="quiet time after a change before it is applied (default 1.0)")
    serve.add_argument("--settle-max-seconds", type=_positive, default=10.0,
                       help="apply a change at the latest this long after it, even if writes go on; "
                            "what is still being written is held back (default 10)")
    serve.add_argument("--load-workers", type=_positive_count, default=2,
                       help="model versions loaded at once; scans and releases have threads of their own (default 2)")
    serve.add_argument("--rescan-seconds", type=_positive, default=10.0,
                       help="periodic full rescan, for filesystems without events (default 10)")
    serve.add_argument("--request-timeout", type=_positive, default=None, metavar="SECONDS",
                       help="deadline of one request; expired requests are cancelled and answered 504 "
                            "(default: none; config.json's request_timeout_s overrides it per model)")
    serve.add_argument("--max-queued-requests", type=_count, default=64,
                       help="generation requests that may wait beyond max_num_seqs before 429 (default 64)")
    serve.add_argument("--max-queued-items", type=_positive_count, default=8192,
                       help="embedding inputs or rerank pairs that may wait per model before 429 (default 8192)")
    serve.add_argument("--stall-timeout", type=_positive, default=120.0, metavar="SECONDS",
                       help="a generation worker silent this long with requests active is restarted (default 120)")
    serve.add_argument("--shutdown-timeout", type=_positive, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, stop accepting and let in-flight requests finish this long, then exit 0 "
                            "(default 30); readiness answers 503 from the signal on")
    serve.add_argument("--api-key-file", metavar="FILE", default=None,
                       help="require 'Authorization: Bearer <key>' on /v3 and on mutating /v1 and /v2 routes; "
                            "one key per line, re-read on change (the API_KEY environment variable adds one)")
    serve.add_argument("--protect-metrics", action="store_true", help="/metrics needs an API key too")
    serve.add_argument("--allowed-origins", type=_names, default=(), metavar="LIST",
                       help="comma-separated origins browsers may call from ('*': any); CORS is off without it")
    serve.add_argument("--allowed-methods", type=_names, default=("GET", "POST", "OPTIONS"), metavar="LIST",
                       help="methods allowed in CORS preflights (default GET,POST,OPTIONS)")
    serve.add_argument("--allowed-headers", type=_names, default=("Authorization", "Content-Type", "X-Request-Id"),
                       metavar="LIST", help="headers allowed in CORS preflights (default Authorization,Content-Type,X-Request-Id)")
    for limit in dataclasses.fields(Limits):
        serve.add_argument(f"--{limit.name.replace('_', '-')}", type=_positive_count, default=limit.default, dest=limit.name,
                           help=f"request limit (default {limit.default}); see the README's Limits and errors")
    serve.set_defaults(run=_serve)

    validate = commands.add_parser("validate", help="check every config.json and version folder")
    validate.add_argument("directory")
    validate.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
