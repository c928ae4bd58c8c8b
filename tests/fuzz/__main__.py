"""Fuzz the harnesses with atheris, or replay inputs through them.

    python -m tests.fuzz [--runs N] [--seconds T] [HARNESS ...] [-- LIBFUZZER_FLAG ...]
    python -m tests.fuzz --replay PATH ... [--harness NAME]
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
        """The last line of the uncaught exception's report in the log."""
        report = self.log.read_text("utf-8", "replace").partition("=== Uncaught Python exception: ===")[2]
        lines = [line for line in report.splitlines() if line and not line.startswith(" ")]
        for line in lines:
            if not line.startswith("Traceback"):
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
    command = [sys.executable, "-m", "tests.fuzz._worker", harness.name, *flags, *extra,
               str(corpus), str(seeds)]
    before = set(crashes.iterdir())
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    with open(log, "wb") as output:
        completed = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=environment)
    elapsed = time.monotonic() - started
    found = sorted(set(crashes.iterdir()) - before)
    return Result(harness.name, executed_inputs(log.read_bytes()), elapsed, found,
                  completed.returncode, log)


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
