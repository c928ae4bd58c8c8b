"""``python -m parallio``: run a protocol, a service or an HTTP server on
every core. Each module of this package adds its subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import asgi, http, wiki
from .options import add_run_options, serve

log = logging.getLogger("parallio")

#: Subcommands that serve one ready-made protocol: name -> (import path,
#: default port, help).
SERVICES = {
    "echo": ("parallio.services:Echo", 8007, "echo back what arrives (RFC 862)"),
    "echo-upper": ("parallio.services:EchoUpper", 8008, "echo, upper-cased"),
    "echo-line": ("parallio.services:EchoLine", 8009, "echo whole lines (lines mode)"),
    "discard": ("parallio.services:Discard", 8010, "read and discard (RFC 863)"),
    "daytime": ("parallio.services:Daytime", 8013, "send the date and close (RFC 867)"),
    "qotd": ("parallio.services:Qotd", 8017, "send a quote and close (RFC 865)"),
    "chargen": ("parallio.services:Chargen", 8019, "stream characters (RFC 864)"),
}

#: The other subcommands, each module's: name -> (help, configure the
#: parser, run from parsed arguments).
COMMANDS = {**http.COMMANDS, **asgi.COMMANDS, **wiki.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parallio",
        description="Serve protocols on every core with completion-based I/O.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser(
        "serve", help="serve a protocol class of yours",
        description="Serve MODULE:CLASS, a protocol class importable by every worker.")
    serve_parser.add_argument("protocol", metavar="MODULE:CLASS")
    add_run_options(serve_parser, 8000)

    for name, (_path, port, help_text) in SERVICES.items():
        add_run_options(commands.add_parser(name, help=help_text, description=help_text), port)

    for name, (help_text, configure, _run) in COMMANDS.items():
        configure(commands.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(message)s")
    # Workers in the processes and interpreters hosts must find the user's
    # module the way `python -m` would: from the current directory.
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        if args.command == "serve":
            serve(args, args.protocol)
        elif args.command in SERVICES:
            serve(args, SERVICES[args.command][0])
        else:
            COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error("%s", exc, exc_info=args.log_level == "DEBUG")
        return 1
    return 0
