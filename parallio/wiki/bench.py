"""Measures the wiki: ``python -m parallio.wiki.bench --data DIR``.

* **memory**: the whole server's PSS (summed over its processes: a page
  shared by n processes counts 1/n in each) with 1 and 2 workers in the
  processes and interpreters hosts, after a short search load, with the
  index's own mapping (the memfd ``parallio.share`` made) apart: its PSS
  summed over the processes is one copy whatever the number of workers.
  The text is never mapped: entries go out with sendfile from the page
  cache, so it is in no process's memory at all.
* **throughput**: ``/search`` with random real prefixes (a wrk Lua script
  draws each request's prefix from headwords of the index, cut to a random
  length), parallio with 1 and 2 workers beside the same search on plain
  asyncio (:mod:`.peer_asyncio`, 1 and 2 processes) and on Flask under
  gunicorn with 2 sync workers (:mod:`.peer_flask`). Every server is up at
  once and loaded in turn, round after round, each round starting one
  further along; figures are medians over rounds, and only ratios within
  one run mean anything on a shared machine.

Before any load every server is asked the same searches and must answer
exactly what parallio answers. Installs what is missing where it may (wrk
with apt-get, gunicorn with pip) unless ``--no-install``. Prints a markdown
report; ``--output FILE`` also writes every raw figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

from ..bench import servers as srv
from ..bench.proc import cpu_times
from ..bench.servers import Contender, RunningServer, ServerFailed
from ..bench.tools import ensure_binary, ensure_module
from ..bench.wrk import WrkError, run_wrk, wrk_version
from ..host import InterpretersHost
from .app import Wiki
from .build import INDEX_NAME
from .index import Index

PEER_ASYNCIO = Path(__file__).resolve().parent / "peer_asyncio.py"
PREFIXES = 20_000
CHECK_QUERIES = ("q=dilu&limit=5", "q=a&limit=10", "q=" + quote("Æ") + "&limit=3",
                 "q=zzzzz", "q=&limit=2")

# Each wrk thread reads the prefixes once, then every request draws one.
_LUA = r"""
local prefixes = {}
for line in io.lines(%(path)s) do prefixes[#prefixes + 1] = line end
local count = #prefixes
math.randomseed(%(seed)d)
request = function()
  return wrk.format("GET", "/search?limit=10&q=" .. prefixes[math.random(count)])
end
"""


def say(message: str) -> None:
    print(f"wiki bench: {message}", file=sys.stderr, flush=True)


def random_prefixes(index: Index, count: int, seed: int) -> list[str]:
    """``count`` prefixes of random headwords, each cut to a random length
    (1 character to the whole word), percent-encoded."""
    rng = random.Random(seed)
    prefixes = []
    for _ in range(count):
        headword = index.headword(rng.randrange(index.keys))
        prefixes.append(quote(headword[:rng.randint(1, len(headword))], safe=""))
    return prefixes


# -- the servers ------------------------------------------------------------------------

@dataclass
class Server:
    """One contender and its running process (or why it has none)."""

    name: str
    family: str
    workers: int
    argv: list[str]
    running: Optional[RunningServer] = None
    port: int = 0
    problem: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def live(self) -> RunningServer:
        """The process of a contender that was started."""
        if self.running is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.running


def parallio_argv(data: str, host: str, workers: int, port: int) -> list[str]:
    return [sys.executable, "-m", "parallio", "--log-level", "WARNING", "wiki", "--data", data,
            "--workers", str(workers), "--parallel", host, "--port", str(port),
            "--drain-timeout", "1"]


def contenders(data: str, hosts: list[str], gunicorn: bool) -> list[Server]:
    servers = []
    for host in hosts:
        for workers in (1, 2):
            port = srv.free_port()
            servers.append(Server(f"parallio {host}", "parallio", workers,
                                  parallio_argv(data, host, workers, port), port=port))
    for workers in (1, 2):
        port = srv.free_port()
        servers.append(Server("asyncio", "asyncio", workers, [
            sys.executable, str(PEER_ASYNCIO), "--data", data, "--port", str(port),
            "--workers", str(workers)], port=port))
    if gunicorn:
        port = srv.free_port()
        servers.append(Server("flask (gunicorn sync)", "flask", 2, [
            sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            f"parallio.wiki.peer_flask:create_app({data!r})"], port=port))
    return servers


def start(server: Server, scratch: Path) -> None:
    server.running = RunningServer(Contender(server.name, server.family), server.argv,
                                   server.port, scratch / f"{server.port}.log", cpus=None)
    try:
        server.running.wait_ready()
        if server.family == "parallio":
            worker_reports(server.port, server.workers, lambda reports: True)
    except ServerFailed as exc:
        server.problem = f"did not start: {exc}"


def answers(port: int) -> list[Any]:
    """What the server answers to CHECK_QUERIES (a connection each: gunicorn's
    sync workers close after every answer)."""
    found = []
    for query in CHECK_QUERIES:
        [reply] = srv.http_get(port, ["/search?" + query])
        if reply.status != 200 or not reply.headers.get("content-type", "").startswith(
                "application/json"):
            raise ValueError(f"/search?{query}: {reply.status} {reply.body[:80]!r}")
        found.append(json.loads(reply.body))
    return found


# -- memory -----------------------------------------------------------------------------

def _smaps_figures(pid: int, mapping_name: str) -> tuple[int, int, int, int]:
    """(Pss, Rss) of the whole process and of the mappings named
    ``mapping_name``, in bytes, from /proc/PID/smaps."""
    pss = rss = index_pss = index_rss = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            name, _, rest = line.partition(":")
            if " " in name:  # a mapping's first line: "start-end perms offset dev inode path"
                inside = mapping_name in line
                continue
            if name not in ("Pss", "Rss"):
                continue
            value = int(rest.split()[0]) * 1024
            if name == "Pss":
                pss += value
                index_pss += value if inside else 0
            else:
                rss += value
                index_rss += value if inside else 0
    return pss, rss, index_pss, index_rss


def worker_reports(port: int, workers: int, until: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 10.0) -> list[dict[str, Any]]:
    """The per-worker counters of a wiki server's /stats, once ``until``
    holds for them (each worker reports every second) or ``timeout`` passed.
    A worker reports once it serves: a load that started before every
    worker listened would leave the late ones without connections."""
    deadline = time.monotonic() + timeout
    while True:
        [reply] = srv.http_get(port, ["/stats"])
        reports = json.loads(reply.body)["workers"]
        if (len(reports) == workers and until(reports)) or time.monotonic() > deadline:
            return reports
        time.sleep(0.25)


def python_index_bytes(index: Index) -> int:
    """What the index takes as ordinary Python objects (a sorted list of
    (key, headword, entries) tuples, as a worker would hold it without a
    shared buffer): each worker of the processes or interpreters host would
    need its own."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copy = [(index.key(number), *index.match(number)[1:]) for number in range(index.keys)]
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del copy
    return size


def measure_memory(data: str, hosts: list[str], wrk: str, lua: str, scratch: Path,
                   seconds: int) -> list[dict[str, Any]]:
    mapping = "parallio-" + Wiki(data).share_name
    rows: list[dict[str, Any]] = []
    for host in hosts:
        for workers in (1, 2):
            port = srv.free_port()
            server = Server(f"parallio {host}", "parallio", workers,
                            parallio_argv(data, host, workers, port), port=port)
            start(server, scratch)
            try:
                if server.problem:
                    rows.append({"host": host, "workers": workers, "problem": server.problem})
                    continue
                worker_reports(port, workers, lambda reports: True)
                # Load first, so each worker has searched and mapped what it reads.
                run_wrk(wrk, f"http://127.0.0.1:{port}/", connections=16, duration_s=seconds,
                        lua=lua)
                searches = [report["searches"] for report in worker_reports(
                    port, workers, lambda reports: all(r["searches"] for r in reports))]
                pids = server.live().pids()
                per_process = [_smaps_figures(pid, mapping) for pid in pids]
                rows.append({
                    "host": host, "workers": workers, "processes": len(pids),
                    "pss": sum(figures[0] for figures in per_process),
                    "rss": sum(figures[1] for figures in per_process),
                    "index_pss": sum(figures[2] for figures in per_process),
                    "index_rss_per_process": [figures[3] for figures in per_process
                                              if figures[3]],
                    "searches_per_worker": searches,
                })
                say(f"memory: {host} x{workers}: PSS {rows[-1]['pss'] / 2**20:.1f} MiB")
            finally:
                server.live().stop()
    return rows


# -- throughput -------------------------------------------------------------------------

def measure_throughput(servers: list[Server], wrk: str, lua: str, seconds: int, rounds: int,
                       connections: int, warmup: int) -> None:
    live = [server for server in servers if not server.problem]
    for server in live if warmup else ():  # a warm-up each, not measured
        run_wrk(wrk, f"http://127.0.0.1:{server.port}/", connections=connections,
                duration_s=warmup, lua=lua)
    for number in range(rounds):
        order = live[number % len(live):] + live[:number % len(live)] if live else []
        for server in order:
            pids = server.live().pids()
            before = cpu_times(pids)
            try:
                result = run_wrk(wrk, f"http://127.0.0.1:{server.port}/",
                                 connections=connections, duration_s=seconds, lua=lua)
            except WrkError as exc:
                server.problem = f"wrk failed: {exc}"
                continue
            cpu = (cpu_times(pids) - before).total
            server.rounds.append({
                "rps": result.rps, "requests": result.requests, "cpu_s": cpu,
                "p50_ms": result.latency_ms["p50"], "p99_ms": result.latency_ms["p99"],
                "errors": result.errors, "non_2xx": result.non_2xx})
            say(f"round {number + 1}: {server.name} x{server.workers}: {result.rps:,.0f} req/s")


def summary(server: Server) -> dict[str, Any]:
    rounds = server.rounds
    if not rounds:
        return {}
    requests = sum(r["requests"] for r in rounds)
    return {"rps": statistics.median(r["rps"] for r in rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "cpu_us_per_request": 1e6 * sum(r["cpu_s"] for r in rounds) / max(requests, 1),
            "errors": sum(r["errors"] for r in rounds),
            "non_2xx": sum(r["non_2xx"] for r in rounds)}


# -- the report -------------------------------------------------------------------------

def render(results: dict[str, Any]) -> str:
    lines = [f"## wiki bench, {results['machine']['when']}, {results['machine']['cpus']} CPUs, "
             f"Python {results['machine']['python']}", "",
             f"Index {results['index']['bytes'] / 2**20:.1f} MiB ({results['index']['keys']:,} "
             f"headwords; as Python objects it would take "
             f"{results['index']['as_python_objects'] / 2**20:.1f} MiB per worker), text "
             f"{results['index']['text_bytes'] / 2**20:.1f} MiB.", ""]
    if results["memory"]:
        lines += ["### Memory (PSS summed over the server's processes)", "",
                  "| host | workers | processes | PSS MiB | index PSS MiB | index RSS MiB "
                  "per process | searches per worker |", "|---|---|---|---|---|---|---|"]
        for row in results["memory"]:
            if "problem" in row:
                lines.append(f"| {row['host']} | {row['workers']} | - | {row['problem']} ||||")
                continue
            per_process = ", ".join(f"{value / 2**20:.1f}"
                                    for value in row["index_rss_per_process"])
            lines.append(f"| {row['host']} | {row['workers']} | {row['processes']} | "
                         f"{row['pss'] / 2**20:.1f} | {row['index_pss'] / 2**20:.1f} | "
                         f"{per_process} | {', '.join(map(str, row['searches_per_worker']))} |")
        lines.append("")
    rows = results["throughput"]
    if rows:
        asyncio_rows = {row["workers"]: row for row in rows
                        if row["family"] == "asyncio" and row.get("rps")}
        flask_rps = next((row["rps"] for row in rows if row["family"] == "flask"
                          and row.get("rps")), None)
        lines += [f"### /search throughput (random real prefixes, wrk -t1 "
                  f"-c{results['settings']['connections']}, {results['settings']['seconds']} s x "
                  f"{results['settings']['rounds']} rounds, medians)", "",
                  "| server | workers | req/s | p50 ms | p99 ms | CPU µs/req | "
                  "req/s x asyncio (same workers) | CPU/req x asyncio | req/s x flask |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            if not row.get("rps"):
                lines.append(f"| {row['name']} | {row['workers']} | {row.get('problem', '')} "
                             "|||||||")
                continue
            peer = asyncio_rows.get(row["workers"])
            versus_asyncio = f"{row['rps'] / peer['rps']:.2f}" if peer else "-"
            cpu_versus_asyncio = (f"{row['cpu_us_per_request'] / peer['cpu_us_per_request']:.2f}"
                                  if peer else "-")
            versus_flask = f"{row['rps'] / flask_rps:.2f}" if flask_rps else "-"
            lines.append(f"| {row['name']} | {row['workers']} | {row['rps']:,.0f} | "
                         f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['cpu_us_per_request']:.0f} | {versus_asyncio} | "
                         f"{cpu_versus_asyncio} | {versus_flask} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parallio.wiki.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="a data directory made by `python -m parallio wiki build`")
    parser.add_argument("--seconds", type=int, default=5, help="of each measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of load before each server's first measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip", choices=["memory", "throughput"], action="append",
                        default=[], help="leave a measurement out")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="never install wrk or gunicorn")
    parser.add_argument("--output", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    data = os.path.realpath(args.data)
    # The servers (gunicorn's workers too) import parallio from this tree.
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    index = Index(Path(data, INDEX_NAME).read_bytes())
    wrk = ensure_binary("wrk", "wrk", args.install, say)
    if wrk is None:
        return 2
    gunicorn = ensure_module("gunicorn", args.install, say) and ensure_module(
        "flask", args.install, say)
    if not gunicorn:
        say("Flask on gunicorn is not installed: its row is left out")
    hosts = ["processes"] + (["interpreters"] if InterpretersHost.unavailable_reason() is None
                             else [])
    scratch = Path(tempfile.mkdtemp(prefix="parallio-wiki-bench-"))
    prefix_file = scratch / "prefixes.txt"
    prefix_file.write_text("\n".join(random_prefixes(index, PREFIXES, seed=13)) + "\n")
    lua = _LUA % {"path": json.dumps(str(prefix_file)), "seed": 13}
    results: dict[str, Any] = {
        "machine": {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "kernel": platform.release(),
                    "wrk": wrk_version(wrk)},
        "index": {"bytes": index.nbytes, "keys": index.keys, "text_bytes": index.text_size,
                  "as_python_objects": python_index_bytes(index)},
        "settings": {"seconds": args.seconds, "rounds": args.rounds,
                     "connections": args.connections, "warmup": args.warmup},
        "memory": [], "throughput": [],
    }
    failed = False
    if "memory" not in args.skip:
        results["memory"] = measure_memory(data, hosts, wrk, lua, scratch,
                                           max(args.seconds // 2, 1))
        failed |= any("problem" in row for row in results["memory"])
    if "throughput" not in args.skip:
        servers = contenders(data, hosts, gunicorn)
        try:
            for server in servers:
                start(server, scratch)
            reference = None
            for server in servers:
                if server.problem:
                    continue
                try:
                    found = answers(server.port)
                except (OSError, ValueError) as exc:
                    server.problem = f"no proper answer: {exc}"
                    continue
                reference = found if reference is None else reference
                if found != reference:
                    server.problem = "answers differ from parallio's"
            measure_throughput(servers, wrk, lua, args.seconds, args.rounds, args.connections,
                               args.warmup)
        finally:
            for server in servers:
                if server.running is not None:
                    server.running.stop()
        for server in servers:
            row = {"name": server.name, "family": server.family, "workers": server.workers,
                   "rounds": server.rounds, **summary(server)}
            if server.problem:
                row["problem"] = server.problem
                failed = True
            elif row["errors"] or row["non_2xx"]:
                failed = True
            results["throughput"].append(row)
    print(render(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
