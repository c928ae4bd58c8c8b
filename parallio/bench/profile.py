"""``python -m parallio.bench.profile``: where one parallio worker's time
goes per request, by layer, as a markdown table.

One worker (``--parallel threads`` by default, so that the worker is a
thread of the process py-spy attaches to) serves the bench app pinned to
CPU 0 while wrk, on CPU 1, sends it requests whose heads all differ (the
suite's unique-heads script). Two phases on the same server:

1. CPU per request from ``/proc`` (user and system time of the whole
   process tree over a wrk run, no profiler attached);
2. py-spy, a sampling profiler reading the process from outside (ptrace;
   root or CAP_SYS_PTRACE), records native and Python stacks over a second
   run.

The system time of phase 1 is the **kernel** row. The user time is split
over the layers in proportion to the samples that were not inside a system
call (a sample whose innermost frame is a libc system-call wrapper is
kernel time, already counted). A sample belongs to the layer of its
innermost frame in a parallio file (or the app's), so time in the standard
library or in C code counts for the layer that called it (``json.dumps``
for the handler, ``struct.pack_into`` for the engine). Layers are matched
by module path (:data:`LAYERS`): code that moves between files keeps being
counted, and a parallio module no layer names shows up as "other
parallio".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .harness import LOAD_CPU, SERVER_CPU, Progress
from .proc import cpu_times
from .servers import FASTPATH, ROUTES, WSGI, Contender, RunningServer, ServerFailed, \
    check_answers, default_parallio, free_port, route_path
from .tools import ensure_binary
from .wrk import IDENTICAL, UNIQUE, run_wrk

#: Layer -> path fragments (relative to the repository) of the modules in
#: it, first match wins. A path under parallio/ that none names is "other
#: parallio".
LAYERS: dict[str, tuple[str, ...]] = {
    "engine": ("parallio/engine/",),
    "transport": ("parallio/transport.py", "parallio/_transport.py", "parallio/stream.py",
                  "parallio/transport/"),
    "worker loop": ("parallio/worker.py",),
    "parser": ("parallio/http/parser.py",),
    "HTTP protocol": ("parallio/http/connection.py", "parallio/http/fastpath.py",
                      "parallio/http/server.py", "parallio/http/wsgi.py",
                      "parallio/http/static.py"),
    "handler": ("parallio/bench/apps.py", "parallio/bench/routes.py"),
    "writer": ("parallio/http/response.py",),
}
OTHER = "other parallio"
KERNEL = "kernel (system CPU)"
#: libc functions that are system calls: a sample there is kernel time.
SYSCALL = re.compile(
    r"(__)?(libc_|GI___libc_|GI_)?(syscall|send\w*|recv\w*|read\w*|write\w*|epoll_\w+|"
    r"sendfile\w*|accept4?|close\w*|shutdown|\w*sockopt|f?statx?\w*|openat\w*|open64|"
    r"lseek\w*|io_uring\w*|futex\w*|__lll_lock_wait\w*)")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")


@dataclass(frozen=True)
class Frame:
    name: str
    where: str  # "path/to/file.py:line", or a native library

    @property
    def path(self) -> str | None:
        """The Python source path of this frame, or None for native code."""
        file, _, line = self.where.rpartition(":")
        return file if file.endswith(".py") and line.isdigit() else None


def parse_raw(lines: Iterable[str]) -> Counter[tuple[Frame, ...]]:
    """py-spy's ``--format raw`` (collapsed stacks, root first, then a
    count) as stack -> samples."""
    stacks: Counter[tuple[Frame, ...]] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for text in stack.split(";"):
            match = _FRAME.match(text)
            frames.append(Frame(match["name"], match["where"]) if match else Frame(text, ""))
        stacks[tuple(frames)] += int(count)
    return stacks


def layer_of_path(path: str) -> str | None:
    """The layer of a source file, None outside parallio."""
    normalized = path.replace("\\", "/")
    at = normalized.rfind("parallio/")
    if at < 0:
        return None
    relative = normalized[at:]
    for layer, fragments in LAYERS.items():
        if any(relative.startswith(fragment) for fragment in fragments):
            return layer
    return OTHER


def layer_of_stack(stack: Sequence[Frame]) -> str | None:
    """The layer a sample counts for: kernel when it is inside a system
    call, else its innermost parallio (or app) frame's; None when it is not
    the worker's (the supervisor, another thread)."""
    if not any(frame.path and layer_of_path(frame.path) == "worker loop" for frame in stack):
        return None  # not the worker: the supervisor, or another thread
    leaf = stack[-1]
    if leaf.path is None and "libc" in leaf.where and SYSCALL.fullmatch(leaf.name):
        return KERNEL
    for frame in reversed(stack):
        if frame.path:
            layer = layer_of_path(frame.path)
            if layer is not None:
                return layer
    return None


def attribute(stacks: Counter[tuple[Frame, ...]]) -> tuple[Counter[str], int]:
    """Samples per layer, and the samples outside the worker."""
    layers: Counter[str] = Counter()
    outside = 0
    for stack, count in stacks.items():
        layer = layer_of_stack(stack)
        if layer is None:
            outside += count
        else:
            layers[layer] += count
    return layers, outside


def cost_table(layers: Counter[str], user_us: float, system_us: float) -> list[list[str]]:
    """Rows of (layer, µs per request, share): kernel from /proc, the user
    time split over the layers by their samples outside system calls."""
    python = {layer: count for layer, count in layers.items() if layer != KERNEL}
    sampled = sum(python.values()) or 1
    total = user_us + system_us
    rows = [[KERNEL + ", /proc", f"{system_us:.2f}", f"{system_us / total:.0%}"]]
    for layer in [*LAYERS, OTHER]:
        if layer in python:
            cost = user_us * python[layer] / sampled
            rows.append([layer, f"{cost:.2f}", f"{cost / total:.0%}"])
    rows.append(["**total** (user + system CPU, /proc)", f"**{total:.2f}**", "100%"])
    return rows


def find_py_spy(install: bool, say: Progress) -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None and install:
        # A program in a wheel, nothing to import: pip puts it beside Python.
        say("  installing py-spy with pip ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"],
                       capture_output=True)
        found = str(beside) if beside.exists() else shutil.which("py-spy")
    return found


def py_spy_version(py_spy: str) -> str:
    result = subprocess.run([py_spy, "--version"], capture_output=True, text=True)
    return result.stdout.strip() or "py-spy"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parallio.bench.profile",
        description="Profile one parallio worker under load: per-request cost by layer.")
    parser.add_argument("--app", choices=[FASTPATH, ROUTES, WSGI], default=FASTPATH,
                        help="what serves the routes (default %(default)s)")
    parser.add_argument("--route", default="plaintext", choices=["plaintext", "json"])
    parser.add_argument("--parallel", default="threads",
                        choices=["threads", "processes", "interpreters"],
                        help="the host of the one worker (default %(default)s: py-spy reads "
                             "a worker thread; interpreters are not visible to it)")
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"])
    parser.add_argument("--heads", default=UNIQUE, choices=[UNIQUE, IDENTICAL],
                        help="request heads: each different (default) or plain wrk's")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per phase")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--raw", type=Path, metavar="FILE",
                        help="also keep py-spy's collapsed stacks here (for a flame graph)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install wrk or py-spy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = Progress()
    install = not args.no_install
    wrk = ensure_binary("wrk", "wrk", install, say)
    py_spy = find_py_spy(install, say)
    if wrk is None or py_spy is None:
        say("needs wrk (apt-get install wrk) and py-spy (pip install py-spy)")
        return 2
    engine = args.io
    if engine == "auto":
        engine = (default_parallio() or "threads/epoll").partition("/")[2]
    contender = Contender(f"parallio {args.parallel}/{engine}", "parallio", args.app,
                          args.parallel, engine)
    scratch = Path(tempfile.mkdtemp(prefix="parallio-profile-"))
    port = free_port()
    argv_ = contender.argv("app", port, 1, scratch, scratch)
    say(f"starting {' '.join(argv_[2:])} on CPU {SERVER_CPU}")
    server = RunningServer(contender, argv_, port, scratch / "server.log", SERVER_CPU)
    try:
        server.wait_ready()
        problem = check_answers(server, [args.route], {})
        if problem:
            raise ServerFailed(problem)
        url = server.url(route_path(args.route))

        def load(seconds: int):
            return run_wrk(wrk, url, connections=args.connections, duration_s=seconds,
                           cpus=LOAD_CPU, heads=args.heads)

        load(1)  # warm-up
        pids = server.pids()
        before = cpu_times(pids)
        result = load(args.seconds)
        used = cpu_times(pids) - before
        requests = max(result.requests, 1)
        user_us, system_us = used.user / requests * 1e6, used.system / requests * 1e6
        say(f"{result.rps:,.0f} req/s: {user_us:.2f} µs user + {system_us:.2f} µs system "
            "per request; sampling ...")
        raw = scratch / "profile.txt"
        wrk_run = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, wrk, "-t1", f"-c{args.connections}",
             f"-d{args.seconds + 3}s", "-s", _script(scratch, args.heads), url],
            stdout=subprocess.DEVNULL)
        time.sleep(1)
        command = [py_spy, "record", "--native", "--rate", str(args.rate), "--duration",
                   str(args.seconds), "--format", "raw", "--output", str(raw),
                   "--pid", str(server.process.pid)]
        if args.parallel == "processes":
            command.append("--subprocesses")
        spied = subprocess.run(command, capture_output=True, text=True)
        wrk_run.wait()
        if spied.returncode != 0 or not raw.exists():
            say(f"py-spy failed: {(spied.stderr or spied.stdout).strip()[-300:]} (it needs "
                "ptrace: root or CAP_SYS_PTRACE, and a kernel.yama.ptrace_scope that allows it)")
            return 1
        if args.raw is not None:
            shutil.copyfile(raw, args.raw)
        layers, outside = attribute(parse_raw(raw.read_text().splitlines()))
    except ServerFailed as exc:
        say(f"the server failed: {exc}")
        return 1
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    samples = sum(layers.values())
    app = {FASTPATH: "the fast path (BenchApp)", ROUTES: "HttpServer routes",
           WSGI: "a WSGI callable"}[args.app]
    heads = "every head different (unique-heads script)" if args.heads == UNIQUE \
        else "plain wrk (identical heads)"
    print(f"Per-request cost by layer: parallio {contender.combo}, 1 worker on CPU {SERVER_CPU}, "
          f"{app}, GET /{args.route}, wrk -c{args.connections} on CPU {LOAD_CPU}, {heads}; "
          f"Python {sys.version.split()[0]}; {result.rps:,.0f} req/s. CPU from /proc over "
          f"{args.seconds} s; shares from {py_spy_version(py_spy)} --native at {args.rate} Hz "
          f"({samples} samples in the worker, {layers[KERNEL]} of them in system calls; "
          f"{outside} outside the worker, left out).\n")
    print("| layer | µs per request | share |")
    print("| --- | ---: | ---: |")
    for row in cost_table(layers, user_us, system_us):
        print("| " + " | ".join(row) + " |")
    return 0


def _script(folder: Path, heads: str) -> str:
    from .wrk import lua_script

    path = folder / "load.lua"
    path.write_text(lua_script(heads))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
