"""ASGI on one core: parallio's ASGI server vs uvicorn (httptools, uvloop).

    python -m parallio.bench.asgi [--duration 5] [--rounds 3] [--connections 64]

Each contender serves ``examples/asgi_plain_app.py`` (plain ASGI, no
framework) with one worker pinned to CPU 0; wrk, pinned to CPU 1, loads
``/plaintext`` and ``/json`` over keep-alive connections. The figure is
requests per server-CPU-second: requests wrk completed divided by the CPU
time (user + system) of the server's whole process tree over the run, so a
server is charged for everything it runs. Contenders take turns, round
after round (the order rotating), and each figure is the median of its
rounds. Not a test: the numbers depend on the machine and its load, only
the ratios between contenders of one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .proc import cpu_times, process_tree
from .wrk import run_wrk

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.asgi_plain_app:app"
ENDPOINTS = ("/plaintext", "/json")


@dataclass(frozen=True)
class Contender:
    name: str
    argv: tuple[str, ...]  # {port} is filled in


CONTENDERS = (
    Contender("parallio asgi (uvloop)", (
        sys.executable, "-m", "parallio.asgi", APP, "--workers", "1", "--parallel", "threads",
        "--loop", "uvloop", "--port", "{port}", "--log-level", "WARNING")),
    Contender("parallio asgi (asyncio loop)", (
        sys.executable, "-m", "parallio.asgi", APP, "--workers", "1", "--parallel", "threads",
        "--loop", "asyncio", "--port", "{port}", "--log-level", "WARNING")),
    Contender("uvicorn (httptools, uvloop)", (
        sys.executable, "-m", "uvicorn", APP, "--http", "httptools", "--loop", "uvloop",
        "--port", "{port}", "--no-access-log", "--log-level", "warning", "--lifespan", "off")),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(contender: Contender) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = ["taskset", "-c", "0", *(part.format(port=port) for part in contender.argv)]
    process = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/plaintext", timeout=1) as reply:
                if reply.read() == b"Hello, World!":
                    return process, port
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"{contender.name} did not start")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def measure(contender: Contender, endpoint: str, args: argparse.Namespace) -> float:
    process, port = start(contender)
    try:
        run_wrk("wrk", f"http://127.0.0.1:{port}{endpoint}", connections=args.connections,
                duration_s=1, cpus="1")  # warm-up
        tree = process_tree(process.pid)
        before = cpu_times(tree)
        result = run_wrk("wrk", f"http://127.0.0.1:{port}{endpoint}", connections=args.connections,
                         duration_s=args.duration, cpus="1")
        used = (cpu_times(tree) - before).total
        if result.errors or result.non_2xx:
            raise RuntimeError(f"{contender.name} {endpoint}: {result.errors} socket errors, "
                               f"{result.non_2xx} non-2xx")
        return result.requests / used
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    figures: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        order = CONTENDERS[round_index % len(CONTENDERS):] + CONTENDERS[:round_index % len(CONTENDERS)]
        for endpoint in ENDPOINTS:
            for contender in order:
                value = measure(contender, endpoint, args)
                figures.setdefault((contender.name, endpoint), []).append(value)
                print(f"round {round_index + 1} {endpoint:<10} {contender.name:<30} "
                      f"{value:10.0f} req/CPU-s", flush=True)
    baseline = CONTENDERS[-1].name
    print(f"\nmedian of {args.rounds} rounds, {args.duration}s each, {args.connections} "
          f"connections, 1 server core; ratio against {baseline}")
    for endpoint in ENDPOINTS:
        reference = statistics.median(figures[(baseline, endpoint)])
        for contender in CONTENDERS:
            value = statistics.median(figures[(contender.name, endpoint)])
            print(f"{endpoint:<10} {contender.name:<30} {value:10.0f} req/CPU-s  "
                  f"{value / reference:5.2f}x")


if __name__ == "__main__":
    main()
