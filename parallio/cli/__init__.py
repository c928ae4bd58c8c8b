"""``python -m parallio``: run a protocol, a service or an HTTP server on
every core. Each module of this package adds its subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .. import _errors, _logging, _proctitle
from .._version import __version__
from . import asgi, asyncio, http, wiki
from .config import ConfigError, parse_args
from .options import add_access_log_options, add_global_options, add_run_options, serve

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
COMMANDS = {**http.COMMANDS, **asgi.COMMANDS, **asyncio.COMMANDS, **wiki.COMMANDS}

#: Subcommands whose positional argument must be given (on the command
#: line or in the configuration): name -> its dest.
_REQUIRED_ARGUMENT = {"serve": "protocol", "wsgi": "app", "asgi": "app"}


def _prog() -> str:
    return "parallio" if os.path.basename(sys.argv[0]) == "parallio" else "python -m parallio"


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's."""
    parser = argparse.ArgumentParser(
        prog=_prog(), description="Serve protocols on every core with completion-based I/O.")
    parser.add_argument("--version", action="version", version=f"parallio {__version__}")
    add_global_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}

    serve_parser = parsers["serve"] = commands.add_parser(
        "serve", help="serve a protocol class of yours",
        description="Serve MODULE:CLASS, a protocol class importable by every worker.")
    serve_parser.add_argument("protocol", metavar="MODULE:CLASS", nargs="?")
    add_run_options(serve_parser, 8000)
    add_access_log_options(serve_parser)

    for name, (_path, port, help_text) in SERVICES.items():
        parsers[name] = commands.add_parser(name, help=help_text, description=help_text)
        add_run_options(parsers[name], port)

    for name, (help_text, configure, _run) in COMMANDS.items():
        parsers[name] = commands.add_parser(name, help=help_text, description=help_text)
        configure(parsers[name])
    return parser, parsers


def build_parser() -> argparse.ArgumentParser:
    return build_parsers()[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser, parsers = build_parsers()
    try:
        args = parse_args(parser, parsers, argv)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    required = _REQUIRED_ARGUMENT.get(args.command)
    if required is not None and getattr(args, required) is None:
        metavar = "MODULE:CLASS" if required == "protocol" else "MODULE:APP"
        parsers[args.command].error(f"the {metavar} argument is missing (give it on the "
                                    f"command line, or as {required!r} in the configuration)")
    try:
        _logging.configure(args.log_level,
                           _logging.load_config(args.log_config) if args.log_config else None)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    _proctitle.set_process_title(
        " ".join(["parallio: main", *(argv if argv is not None else sys.argv[1:])]),
        "parallio: main")
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
        # One line and the user's own traceback; everything at debug level.
        log.error("%s", _errors.describe(exc), exc_info=exc if args.log_level == "DEBUG" else None)
        return 1
    return 0
