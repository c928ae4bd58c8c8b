"""``python -m tests.stress {slowloris,trickle,soak,hold}``: see scripts/soak,
scripts/slowloris and scripts/trickle. Exit status 1 when a check fails."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import hold, slowloris, trickle
from .soak import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("slowloris", "trickle", "soak"):
        command = commands.add_parser(name)
        command.add_argument("--parallel", default="processes")
        command.add_argument("--workers", type=int, default=2)
        command.add_argument("--io", default="auto")
    commands.choices["slowloris"].add_argument("--connections", type=int, default=2000)
    commands.choices["slowloris"].add_argument("--seconds", type=float, default=10.0)
    commands.choices["slowloris"].add_argument("--max-ratio", type=float, default=2.0)
    commands.choices["trickle"].add_argument("--connections", type=int, default=10000)
    commands.choices["trickle"].add_argument("--seconds", type=float, default=8.0)
    commands.choices["trickle"].add_argument("--header-bytes", type=int, default=60 * 1024)
    commands.choices["soak"].add_argument("--seconds", type=float, default=600.0)
    commands.choices["soak"].add_argument("--kill-every", type=float, default=15.0)
    holding = commands.add_parser("hold", help="(used by the others) hold slow connections")
    holding.add_argument("--port", type=int, required=True)
    holding.add_argument("--connections", type=int, required=True)
    holding.add_argument("--seconds", type=float, required=True)
    holding.add_argument("--mode", choices=("slowloris", "trickle"), required=True)
    holding.add_argument("--header-bytes", type=int, default=60 * 1024)
    holding.add_argument("--pieces", type=int, default=8)
    args = parser.parse_args(argv)
    layout = dict(parallel=getattr(args, "parallel", None), workers=getattr(args, "workers", 0),
                  io=getattr(args, "io", None))
    if args.command == "hold":
        report = hold(args.port, args.connections, args.seconds, args.mode, args.header_bytes,
                      args.pieces)
        print(json.dumps(dataclasses.asdict(report)))
        return 0
    if args.command == "slowloris":
        result = slowloris(args.connections, args.seconds, **layout)
        problems = result.problems(args.max_ratio)
    elif args.command == "trickle":
        result = trickle(args.connections, args.seconds, args.header_bytes, **layout)
        problems = result.problems()
    else:
        result = soak(args.seconds, kill_every=args.kill_every, **layout,
                      report=lambda line: print(line, file=sys.stderr, flush=True))
        problems = result.problems()
    print(result.summary())
    for problem in problems:
        print(f"{args.command}: {problem}")
    return int(bool(problems))

if __name__ == "__main__":
    sys.exit(main())
