"""The options every serving subcommand takes, and how they are served."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .. import register, run, server

#: What a module of subcommands provides: name -> (help, configure the
#: parser, run from parsed arguments).
Commands = dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], None]]]


def add_run_options(parser: argparse.ArgumentParser, port: int) -> None:
    """The options every serving subcommand takes."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; '::' or '0.0.0.0' for all (default %(default)s)")
    parser.add_argument("--port", type=int, default=port, help="TCP port (default %(default)s)")
    add_worker_options(parser)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """How many workers, where they run, their engine and their drain."""
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
