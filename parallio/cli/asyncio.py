"""``python -m parallio asyncio MODULE:FUNCTION``: an asyncio program on
every core, each worker on its own parallio event loop."""

from __future__ import annotations

import argparse

from .options import Commands, add_worker_options

__all__ = ["COMMANDS"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("main", metavar="MODULE:COROUTINE_FUNCTION",
                        help="an async def of no arguments, importable from the current "
                             "directory; every worker runs it (servers listen with "
                             "reuse_port=True to share their port)")
    add_worker_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..loop import run_on_all_cores

    run_on_all_cores(args.main, workers=args.workers, parallel=args.parallel, io=args.io,
                     drain_timeout=args.drain_timeout)


COMMANDS: Commands = {
    "asyncio": ("run an asyncio coroutine function in every worker, on parallio's event loop",
                configure, run),
}
