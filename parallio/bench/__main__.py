"""``python -m parallio.bench``: the whole benchmark suite, one command.

Writes ``bench/results/<date>-<machine>.{json,md,png}`` (``--quick``: a
smoke run into a temporary folder unless ``--output`` says otherwise) and
prints the markdown table. Exit status 1 when a contender that ran answered
wrongly or had errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from . import report
from .harness import SCENARIOS, Bench, Progress, Settings, raise_fd_limit
from .proc import set_session_priority
from .servers import ASGI, WSGI, Contender, default_parallio, parallio_contenders
from .tools import ensure_binary, ensure_module
from .wrk import wrk_version

DOC_START = "<!-- bench:latest:start -->"
DOC_END = "<!-- bench:latest:end -->"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parallio.bench",
        description="Benchmark parallio against asyncio, uvloop, uvicorn, granian and nginx "
                    "with wrk.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: each run lasts a second, one round; checks that the "
                             "harness works and every server answers correctly, not speed")
    parser.add_argument("--duration", type=int, help="seconds per measured run "
                        "(default 3; --quick 1)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; --quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--all-combinations", action="store_true",
                        help="every parallio host x engine in every scenario (by default the "
                             "host auto picks with both engines; per_core adds the other "
                             "hosts, scaling takes every host on auto's engine)")
    parser.add_argument("--output", type=Path,
                        help="folder for the results (default bench/results; --quick: a "
                             "temporary folder)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run wrk, the servers and their sessions' scheduling groups at this "
                             "niceness; -10 (as root) shields the measurements from other "
                             "processes on a shared machine")
    parser.add_argument("--no-install", action="store_true",
                        help="never apt-get/pip install missing tools (wrk is still required)")
    parser.add_argument("--render", type=Path, metavar="RESULTS.json",
                        help="run nothing: write the table and chart again from a results "
                             "file (after a change to the report)")
    parser.add_argument("--update-doc", type=Path, metavar="BENCHMARKS.md", nargs="?",
                        const=Path("BENCHMARKS.md"),
                        help="replace the latest table in this file (default BENCHMARKS.md)")
    return parser


#: The Python peers the suite pip-installs when missing: name -> the modules
#: it needs (all must import), and the contenders they make.
PYTHON_PEERS: dict[str, tuple[tuple[str, ...], list[Contender]]] = {
    "uvloop": (("uvloop",), [Contender("uvloop", "uvloop")]),
    "uvicorn": (("uvicorn", "httptools", "uvloop"), [Contender("uvicorn", "uvicorn", ASGI)]),
    "granian": (("granian",), [Contender("granian asgi", "granian", ASGI),
                               Contender("granian wsgi", "granian", WSGI)]),
}


def peer_contenders(install: bool, say: Progress) -> tuple[list[Contender], dict[str, str]]:
    """asyncio, uvloop, uvicorn, granian and nginx, each marked with why it
    cannot run when it cannot; and the versions found."""
    versions = {"python": platform.python_version()}
    contenders = [Contender("asyncio", "asyncio")]
    for modules, made in PYTHON_PEERS.values():
        missing = [module for module in modules if not ensure_module(module, install, say)]
        if missing:
            reason = (f"{', '.join(missing)} not installed in this Python (pip install "
                      f"{' '.join(modules)}; the suite does so itself unless --no-install "
                      "or --quick)")
            contenders += [dataclasses.replace(c, app_skip=reason, static_skip=reason)
                           for c in made]
            continue
        for module in modules:
            versions[module] = _module_version(module)
        contenders += made
    nginx = ensure_binary("nginx", "nginx-light", install, say)
    if nginx:
        result = subprocess.run([nginx, "-v"], capture_output=True, text=True)
        versions["nginx"] = (result.stderr or result.stdout).strip().rpartition("/")[2]
        contenders.append(Contender("nginx", "nginx", binary=nginx))
    else:
        reason = "nginx is not installed (apt-get install nginx-light)"
        contenders.append(Contender("nginx", "nginx", app_skip=reason, static_skip=reason))
    return contenders, versions


def _module_version(module: str) -> str:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return getattr(importlib.import_module(module), "__version__", "?")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    cpus = os.cpu_count() or 1
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()) or "machine"
    return {"name": f"{name}-{cpus}cpu", "cpu": cpu, "cpus": cpus,
            "kernel": platform.release(),
            "python": f"{platform.python_implementation()} {platform.python_version()}"
                      + ("" if getattr(sys, "_is_gil_enabled", lambda: True)() else " (no GIL)")}


def previous_run(folder: Path, results: dict[str, Any]) -> dict[str, Any] | None:
    """The newest full run in ``folder`` before ``results``, on the same
    machine and Python."""
    if results["settings"]["quick"]:
        return None
    candidates = []
    for path in folder.glob("*.json"):
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (earlier.get("suite") == "parallio.bench" and not earlier["settings"]["quick"]
                and earlier["date"] < results["date"]
                and earlier["machine"]["name"] == results["machine"]["name"]
                and earlier["machine"]["python"] == results["machine"]["python"]):
            candidates.append(earlier)
    return max(candidates, key=lambda earlier: earlier["date"], default=None)


def update_doc(path: Path, table: str) -> bool:
    """Put ``table`` between the markers in ``path``; False if they are
    missing."""
    text = path.read_text()
    start, end = text.find(DOC_START), text.find(DOC_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[:start + len(DOC_START)] + "\n" + table + text[end:])
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = Progress()
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["targets"] = report.targets(results["rows"], results["machine"]["cpus"],
                                            results.get("default_contender"))
        stem = args.render.with_suffix("")
    else:
        scenarios = tuple(name.strip() for name in args.scenarios.split(",") if name.strip())
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        settings = Settings.for_mode(args.quick, duration=args.duration, rounds=args.rounds,
                                     scenarios=scenarios, nice=args.nice,
                                     all_combinations=args.all_combinations or None)
        results = run_suite(settings, not args.no_install, say)
        if results is None:
            return 2
        if args.output is not None:
            output = args.output
        elif settings.quick:
            output = Path(tempfile.gettempdir()) / "parallio-bench-quick"
        else:
            output = Path("bench") / "results"
        output.mkdir(parents=True, exist_ok=True)
        stem = output / f"{results['started']}-{results['machine']['name']}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    install = not args.no_install and not results["settings"]["quick"]
    write_reports(results, stem, install, args.update_doc, say)
    problems = run_problems(results)
    for problem in problems:
        say(f"PROBLEM: {problem}")
    return 1 if problems else 0


def run_problems(results: dict[str, Any]) -> list[str]:
    """What makes a run fail: a contender that answered wrongly, failed or
    had errors under load, or a scenario in which no parallio contender
    ran (a broken parallio must not pass as "skipped")."""
    problems = [f"{row['scenario']} {row['contender']}: {row['reason'] or 'errors under load'}"
                for row in results["rows"] if row["status"] == "failed"
                or row["median"].get("errors") or row["median"].get("non_2xx")]
    for scenario in results["settings"]["scenarios"]:
        ran = [row for row in results["rows"] if row["scenario"] == scenario
               and row["family"] == "parallio" and row["status"] == "ok"]
        if not ran:
            problems.append(f"{scenario}: no parallio contender ran")
    return problems


def run_suite(settings: Settings, install: bool, say: Progress) -> dict[str, Any] | None:
    """Run every scenario; the results document, or None without wrk."""
    say("checking tools ...")
    wrk = ensure_binary("wrk", "wrk", install, say)
    if wrk is None:
        say("wrk is required and could not be installed: apt-get install -y wrk")
        return None
    # A smoke run installs only what it cannot do without.
    peers, versions = peer_contenders(install and not settings.quick, say)
    contenders = parallio_contenders(settings.all_combinations) + peers
    for contender in contenders:
        if contender.app_skip:
            say(f"  {contender.name}: skipped: {contender.app_skip}")
        elif contender.static_skip:
            say(f"  {contender.name}: no static file scenario: {contender.static_skip}")
    raise_fd_limit()
    if settings.nice:
        # wrk and the busy loop inherit both; each server's own session
        # gets it when started.
        os.setpriority(os.PRIO_PROCESS, 0, settings.nice)
        set_session_priority("self", settings.nice)
    # Stopping the suite with SIGTERM must stop its servers too: let it
    # unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    started = time.monotonic()
    now = datetime.datetime.now()
    bench = Bench(settings, contenders, wrk, say)
    bench.run()
    info = machine()
    results: dict[str, Any] = {
        "suite": "parallio.bench",
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "started": now.strftime("%Y-%m-%d-%H%M"),
        "machine": info,
        "settings": dataclasses.asdict(settings),
        "tools": {"wrk": wrk_version(wrk), **versions},
        "strictness": bench.strictness,
        "peer_max_rps": bench.peer_max_rps,
        "background_busy": bench.background,
        "elapsed_s": time.monotonic() - started,
        "rows": [row.as_dict() for row in bench.rows],
        "default_contender": default_parallio(),
    }
    results["targets"] = report.targets(rows=results["rows"], cores=info["cpus"],
                                        default=results["default_contender"])
    return results


def write_reports(results: dict[str, Any], stem: Path, install: bool,
                  doc: Path | None, say: Progress) -> None:
    """The markdown table and the chart beside ``stem``.json; the table
    also into ``doc`` when given, and on stdout."""
    previous = previous_run(stem.parent, results)
    if previous is not None:
        say(f"comparing with the previous run of {previous['date']}")
    table = report.markdown(results, previous)
    stem.with_suffix(".md").write_text(table)
    if install and not ensure_module("matplotlib", install, say):
        say("  matplotlib is not available: no chart")
    problem = report.chart(results, stem.with_suffix(".png"))
    if problem:
        say(f"  {problem}")
    if doc is not None:
        if update_doc(doc, table):
            say(f"updated the latest table in {doc}")
        else:
            say(f"{doc} has no {DOC_START} ... {DOC_END} markers: not updated")
    print(table)
    say(f"results: {stem}.json, .md" + ("" if problem else ", .png"))


if __name__ == "__main__":
    sys.exit(main())
