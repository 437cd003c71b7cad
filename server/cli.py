"""Command line: `python -m server serve|validate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from server.app import create_app
    from server.logs import configure_logging

    root = Path(args.model_repository)
    if not root.is_dir():
        print(f"error: model repository {root} is not a folder", file=sys.stderr)
        return 2
    settings = Settings(
        model_repository=root.resolve(),
        host=args.host,
        port=args.port,
        log_format=args.log_format,
        log_level=args.log_level,
        settle_seconds=args.settle_seconds,
        rescan_seconds=args.rescan_seconds,
    )
    configure_logging(settings.log_format, settings.log_level)
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
    serve.add_argument("--settle-seconds", type=float, default=1.0,
                       help="quiet time after a change before it is applied (default 1.0)")
    serve.add_argument("--rescan-seconds", type=float, default=10.0,
                       help="periodic full rescan, for filesystems without events (default 10)")
    serve.set_defaults(run=_serve)

    validate = commands.add_parser("validate", help="check every config.json and version folder")
    validate.add_argument("directory")
    validate.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
