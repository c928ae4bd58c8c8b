"""Fuzz the harnesses with atheris, or replay inputs through them.

    python -m tests.fuzz [--runs N] [--seconds T] [HARNESS ...] [-- LIBFUZZER_FLAG ...]
    python -m tests.fuzz --replay PATH ... [--harness NAME]
    python -m tests.fuzz --merge [HARNESS ...]
    python -m tests.fuzz --list

Fuzzing runs each harness in turn, in a process of its own, for N inputs
(``-atheris_runs``) or T seconds, whichever ends first. Under the work
directory (``--work``, default ``.fuzz/``) each harness keeps the corpus it
grows (``corpus/NAME/``, reused by the next run), its log (``logs/NAME.log``)
and any crash's reproducer (``crashes/NAME/``). The exit status is 1 if any
harness crashed or could not run.

Replay (no atheris needed) runs files, or every file in directories, through
a harness: the one named, else the one whose name the file's folder has
(``crashes/NAME/...``, ``corpus/NAME/...``).

Merge adds to the committed seeds what a long run's corpus reaches beyond
them, so that the CI replay covers it too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .harness import Harness, harnesses

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    harness: str
    inputs: Optional[int]  # None if the log did not say
    seconds: float
    crashes: list[Path]
    returncode: int
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.crashes

    def exception(self) -> str:
        """The uncaught exception atheris reported (its type and message)."""
        report = self.log.read_text("utf-8", "replace").partition("=== Uncaught Python exception: ===")[2]
        for line in report.splitlines():
            if line and not line.startswith((" ", "Traceback")):
                return line[:300]
        return "(no Python exception: see the log)"

    def line(self) -> str:
        inputs = "?" if self.inputs is None else f"{self.inputs:,}"
        rate = f", {self.inputs / self.seconds:,.0f}/s" if self.inputs and self.seconds else ""
        if self.ok:
            return f"{self.harness}: {inputs} inputs in {self.seconds:.0f} s{rate}, no crash"
        if self.crashes:
            found = ", ".join(str(path) for path in self.crashes)
            return (f"{self.harness}: CRASH after {inputs} inputs: {self.exception()}\n"
                    f"  reproducer: {found}\n"
                    f"  replay: python -m tests.fuzz --replay {self.crashes[0]}\n  log: {self.log}")
        return f"{self.harness}: failed to run (exit status {self.returncode}); log: {self.log}"


def materialize_seeds(harness: Harness, directory: Path) -> None:
    """Write every seed of ``harness`` (committed and extra) as files."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, data in harness.seeds():
        (directory / name.replace("/", "__")).write_bytes(data)


_DONE = re.compile(rb"Done (\d+) (?:runs )?in (\d+) second")
_EXECUTED = re.compile(rb"stat::number_of_executed_units: (\d+)")
_PULSE = re.compile(rb"^#(\d+)\s", re.M)


def executed_inputs(log: bytes) -> Optional[int]:
    """How many inputs libFuzzer ran, from its output."""
    for pattern in (_EXECUTED, _DONE):
        found = pattern.findall(log)
        if found:
            last = found[-1]
            return int(last[0] if isinstance(last, tuple) else last)
    pulses = _PULSE.findall(log)
    return int(pulses[-1]) if pulses else None


def fuzz(harness: Harness, work: Path, runs: Optional[int], seconds: Optional[float],
         extra: list[str]) -> Result:
    corpus = work / "corpus" / harness.name
    seeds = work / "seeds" / harness.name
    crashes = work / "crashes" / harness.name
    logs = work / "logs"
    for directory in (corpus, crashes, logs):
        directory.mkdir(parents=True, exist_ok=True)
    materialize_seeds(harness, seeds)
    log = logs / f"{harness.name}.log"
    flags = [f"-max_len={harness.max_len}", f"-artifact_prefix={crashes}/", "-timeout=30",
             "-rss_limit_mb=2048", "-print_final_stats=1"]
    if runs is not None:
        flags.append(f"-atheris_runs={runs}")
    if seconds is not None:
        flags.append(f"-max_total_time={max(1, round(seconds))}")
    if harness.dictionary_path is not None:
        flags.append(f"-dict={harness.dictionary_path}")
    before = set(crashes.iterdir())
    started = time.monotonic()
    returncode = run_worker(harness, [*flags, *extra, str(corpus), str(seeds)], log)
    elapsed = time.monotonic() - started
    found = sorted(set(crashes.iterdir()) - before)
    return Result(harness.name, executed_inputs(log.read_bytes()), elapsed, found, returncode, log)


def run_worker(harness: Harness, arguments: list[str], log: Path) -> int:
    """Run ``harness`` under atheris with libFuzzer ``arguments``, output to ``log``."""
    environment = dict(
        os.environ, PARALLIO_FUZZ_HARNESS=harness.name,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # libFuzzer may start the worker again by its path (#!/usr/bin/env python3).
        PATH=os.pathsep.join(filter(None, [os.path.dirname(sys.executable), os.environ.get("PATH")])))
    with open(log, "wb") as output:
        return subprocess.run([sys.executable, "-m", "tests.fuzz._worker", *arguments], cwd=ROOT,
                              stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=environment).returncode


def merge(harness: Harness, work: Path) -> int:
    """Add to the committed seeds a smallest set of inputs of the grown
    corpus that reach the coverage they do not (libFuzzer's
    -set_cover_merge=1); how many were added."""
    corpus = work / "corpus" / harness.name
    if not corpus.is_dir():
        return 0
    harness.seed_dir.mkdir(parents=True, exist_ok=True)
    before = set(harness.seed_dir.iterdir())
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{harness.name}.merge.log"
    returncode = run_worker(harness, ["-set_cover_merge=1", f"-max_len={harness.max_len}",
                                      str(harness.seed_dir), str(corpus)], log)
    if returncode:
        raise RuntimeError(f"merging {harness.name} failed (exit status {returncode}); log: {log}")
    return len(set(harness.seed_dir.iterdir()) - before)


def replay(paths: list[Path], name: Optional[str], known: dict[str, Harness]) -> int:
    failures = 0
    files = [file for path in paths for file in (sorted(path.iterdir()) if path.is_dir() else [path])]
    for file in files:
        harness_name = name or file.parent.name
        if harness_name not in known:
            print(f"replay: no harness for {file} (name one with --harness)", file=sys.stderr)
            return 2
        try:
            known[harness_name].target(file.read_bytes())
        except Exception:  # noqa: BLE001 -- any exception is a finding
            failures += 1
            print(f"FAIL {harness_name} {file}")
            traceback.print_exc()
        else:
            print(f"ok   {harness_name} {file}")
    print(f"{len(files)} inputs, {failures} failed")
    return 1 if failures else 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("harnesses", nargs="*", metavar="HARNESS", help="default: every harness")
    parser.add_argument("--runs", type=int, help="inputs per harness (default 1,000,000 "
                        "unless --seconds is given)")
    parser.add_argument("--seconds", type=float, help="time per harness")
    parser.add_argument("--work", type=Path, default=ROOT / ".fuzz",
                        help="corpus, logs and crashes go here (default .fuzz/)")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="PATH",
                        help="run these files (or folders' files) through a harness, no atheris")
    parser.add_argument("--harness", help="the harness for --replay")
    parser.add_argument("--merge", action="store_true",
                        help="add to the committed seeds (tests/fuzz/corpus/NAME) the inputs of "
                        "the grown corpus that reach more coverage")
    parser.add_argument("--list", action="store_true", help="list the harnesses")
    options = parser.parse_args(argv)
    known = harnesses()
    if options.list:
        for harness in known.values():
            summary = " ".join((harness.target.__doc__ or "").split("\n\n")[0].split())
            print(f"{harness.name:24} {summary}")
        return 0
    if options.replay:
        return replay(options.replay, options.harness, known)
    unknown = [name for name in options.harnesses if name not in known]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)} (--list shows them)")
    try:
        import atheris  # noqa: F401 -- only to say early that it is missing
    except ImportError:
        print(f"fuzz: atheris is not installed for {sys.executable} (PyPI wheels exist for "
              "CPython 3.11-3.14 on x86_64 Linux); replay needs no atheris", file=sys.stderr)
        return 2
    if options.merge:
        for name in options.harnesses or list(known):
            print(f"{name}: {merge(known[name], options.work)} inputs added to {known[name].seed_dir}")
        return 0
    runs = options.runs if options.runs is not None or options.seconds is not None else 1_000_000
    results = []
    for name in options.harnesses or list(known):
        print(f"fuzzing {name} ...", flush=True)
        result = fuzz(known[name], options.work, runs, options.seconds, extra)
        print(result.line(), flush=True)
        results.append(result)
    print("\n".join(["", "summary:", *(result.line() for result in results)]))
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
