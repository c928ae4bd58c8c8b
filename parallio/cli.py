"""``python -m parallio``: run a protocol, a service or an HTTP server on
every core."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Callable, Sequence

from . import register, run, server

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

#: Further subcommands added by other layers: name -> (help, configure the
#: parser, run from parsed arguments).
EXTRA_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                                Callable[[argparse.Namespace], None]]] = {}
#: The modules whose import adds their subcommands to EXTRA_COMMANDS.
COMMAND_MODULES = ("parallio.http.cli", "parallio.wiki.cli")


def add_run_options(parser: argparse.ArgumentParser, port: int) -> None:
    """The options every serving subcommand takes."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; '::' or '0.0.0.0' for all (default %(default)s)")
    parser.add_argument("--port", type=int, default=port, help="TCP port (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="number of workers (default: the CPUs this process may use)")
    parser.add_argument("--parallel", default="auto",
                        choices=["auto", "threads", "interpreters", "processes"],
                        help="where workers run: threads (parallel on free-threaded builds), "
                             "isolated interpreters (3.13+), processes; auto picks the best "
                             "(default %(default)s)")
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"],
                        help="I/O engine; auto uses io_uring where the kernel allows it "
                             "(default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds in-flight sends get to finish on SIGINT/SIGTERM "
                             "(default %(default)s)")


def serve(args: argparse.Namespace, protocol: Any) -> None:
    """Serve ``protocol`` (what :func:`parallio.register` takes) as the
    run options in ``args`` say."""
    register(transport=server(args.host, args.port), protocol=protocol)
    run(workers=args.workers, parallel=args.parallel, io=args.io,
        drain_timeout=args.drain_timeout)


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

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for name, (help_text, configure, _run) in EXTRA_COMMANDS.items():
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
            EXTRA_COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error("%s", exc, exc_info=args.log_level == "DEBUG")
        return 1
    return 0
