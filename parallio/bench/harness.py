"""The benchmark run: start contenders, load them with wrk, collect figures.

Method (see BENCHMARKS.md and the engine notes): on this 2-core machine the
servers of one scenario are started together, each idle while another is
loaded, and loaded in turn round after round (A B C, then B C A, ...), so
the machine's drift over minutes falls on every contender alike; figures
are the medians over rounds, and ratios are taken against asyncio measured
in the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..runtime import cpu_count
from . import servers as srv
from .idle import IdleConnections
from .proc import PeakRssSampler, cpu_times, machine_busy, rss_bytes
from .servers import APP, STATIC, Contender, RunningServer, ServerFailed
from .wrk import WrkError, run_wrk

SERVER_CPU = "0"
LOAD_CPU = "1"
PER_CORE_CONNECTIONS = 64
SCALING_CONNECTIONS = 32
STATIC_CONNECTIONS = 16
LATENCY_CONNECTIONS = 128
LATENCY_LOADS = (0.5, 0.8)
# Other processes keeping the CPUs busier than this, checked before each
# group of servers starts, make the run's figures noisy: the report says so.
QUIET_BUSY = 0.10

SCENARIOS = ("per_core", "latency", "idle", "static", "scaling")


@dataclass(frozen=True)
class Settings:
    quick: bool
    duration: int  # seconds of each measured wrk run (wrk takes whole seconds)
    warmup: int  # seconds of load before a server's first measured run; 0: none
    rounds: int
    idle_connections: int
    scenarios: tuple[str, ...] = SCENARIOS
    #: Niceness of the suite's session (wrk, the busy loop) and of each
    #: server's: negative shields the measurements from other processes on
    #: a shared machine (root only).
    nice: int = 0

    @classmethod
    def for_mode(cls, quick: bool, **overrides: Any) -> "Settings":
        if quick:
            base = dict(quick=True, duration=1, warmup=0, rounds=1, idle_connections=200)
        else:
            base = dict(quick=False, duration=3, warmup=1, rounds=3, idle_connections=5000)
        base.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**base)


@dataclass
class Row:
    """One contender in one configuration of a scenario, with each round's
    figures and their medians."""

    scenario: str
    contender: str
    family: str
    variant: dict[str, Any]
    status: str = "ok"  # ok, skipped or failed
    reason: str = ""
    trials: list[dict[str, Any]] = field(default_factory=list)
    median: dict[str, Any] = field(default_factory=dict)

    def summarize(self) -> None:
        if not self.trials:
            return
        keys = [key for key, value in self.trials[0].items()
                if isinstance(value, (int, float)) and key not in ("errors", "non_2xx")]
        self.median = {key: statistics.median(trial[key] for trial in self.trials)
                       for key in keys}
        # Errors must be zero: count them all, never a median.
        self.median["errors"] = sum(trial["errors"] for trial in self.trials)
        self.median["non_2xx"] = sum(trial["non_2xx"] for trial in self.trials)

    def as_dict(self) -> dict[str, Any]:
        return dict(scenario=self.scenario, contender=self.contender, family=self.family,
                    variant=self.variant, status=self.status, reason=self.reason,
                    trials=self.trials, median=self.median)


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        print(f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


@dataclass
class Entry:
    """A contender started for a scenario: its server, or why there is none."""

    contender: Contender
    workers: int
    server: RunningServer | None = None
    status: str = "ok"
    reason: str = ""


class Bench:
    def __init__(self, settings: Settings, contenders: list[Contender], wrk: str,
                 say: Progress) -> None:
        self.settings = settings
        self.contenders = contenders
        self.wrk = wrk
        self.say = say
        self.rows: list[Row] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="parallio-bench-"))
        self.static_dir = self.scratch / "static"
        self.static_dir.mkdir()
        static_file = srv.write_static_file(self.static_dir)
        self.static_digest = hashlib.sha256(static_file.read_bytes()).hexdigest()
        self.peer_max_rps: float | None = None
        #: What other processes took of the CPUs before each group of
        #: servers started: {"before": scenario group, "busy": share}.
        self.background: list[dict[str, Any]] = []

    def check_quiet(self, before: str) -> None:
        busy = machine_busy()
        self.background.append({"before": before, "busy": busy})
        if busy > QUIET_BUSY:
            self.say(f"WARNING: other processes keep the CPUs {busy:.0%} busy: "
                     "the figures will be noisy")

    # -- servers ----------------------------------------------------------
    def start(self, contenders: list[Contender], purpose: str, routes: list[str],
              workers: int, cpus: str | None) -> list[Entry]:
        """Start every contender that can serve ``purpose`` at once, then
        check that each answers ``routes`` correctly."""
        entries = []
        for contender in contenders:
            entry = Entry(contender, workers)
            skip = contender.skip_reason(purpose)
            if skip:
                entry.status, entry.reason = "skipped", skip
            else:
                port = srv.free_port()
                log = self.scratch / f"{contender.family}-{port}.log"
                argv = contender.argv(purpose, port, workers, self.static_dir, self.scratch)
                entry.server = RunningServer(contender, argv, port, log, cpus,
                                             self.settings.nice)
            entries.append(entry)
        try:
            for entry in live(entries):
                try:
                    entry.server.wait_ready()
                    problem = srv.check_answers(entry.server, routes, self.static_digest)
                except ServerFailed as exc:
                    problem = str(exc)
                if problem:
                    entry.status, entry.reason = "failed", problem
                    entry.server.stop()
                    entry.server = None
                    self.say(f"  {entry.contender.name} x{workers}: FAILED: {problem}")
        except BaseException:  # interrupted: leave no server behind
            self.stop(entries)
            raise
        return entries

    @staticmethod
    def stop(entries: list[Entry]) -> None:
        for entry in entries:
            if entry.server is not None:
                entry.server.stop()
                entry.server = None

    # -- one measured run -------------------------------------------------
    def measure(self, server: RunningServer, route: str, *, connections: int,
                cpus: str | None, rate: float | None = None) -> dict[str, Any]:
        """Load ``server`` once; wrk's figures plus the server's CPU and
        peak memory over the run."""
        pids = server.pids()
        sampler = PeakRssSampler(pids).start()
        before = cpu_times(pids)
        try:
            result = run_wrk(self.wrk, server.url(srv.route_path(route)),
                             connections=connections, duration_s=self.settings.duration,
                             cpus=cpus, rate=rate)
        finally:
            peak = sampler.stop()
        used = cpu_times(pids) - before
        requests = max(result.requests, 1)
        figures: dict[str, Any] = {
            "rps": result.rps,
            "requests": result.requests,
            "duration_s": result.duration_s,
            "mb_per_s": result.bytes / result.duration_s / 1e6 if result.duration_s else 0.0,
            "cpu_user_s": used.user,
            "cpu_sys_s": used.system,
            "cpu_us_per_request": used.total / requests * 1e6,
            "cpu_s_per_10k": used.total / requests * 1e4,
            # Requests per second of server CPU: what one core could serve
            # when the server, not wrk, is the limit.
            "capacity_rps": requests / used.total if used.total else 0.0,
            "peak_rss_mb": peak / 1e6,
            "errors": result.errors,
            "non_2xx": result.non_2xx,
        }
        figures.update({f"{name}_ms": value for name, value in result.latency_ms.items()})
        if rate is not None:
            figures["rate_target"] = rate
        figures["socket_errors"] = result.socket_errors
        figures["wrk"] = " ".join(result.command)
        return figures

    def warm_up(self, entries: list[Entry], route: str, connections: int,
                cpus: str | None) -> None:
        if not self.settings.warmup:
            return
        for entry in live(entries):
            self.guarded(entry, lambda server: run_wrk(
                self.wrk, server.url(srv.route_path(route)), connections=connections,
                duration_s=self.settings.warmup, cpus=cpus))

    def guarded(self, entry: Entry, action: Callable[[RunningServer], Any]) -> Any:
        """Run ``action`` on the entry's server; if the server died or wrk
        failed, mark the entry failed (the suite goes on without it)."""
        assert entry.server is not None
        try:
            return action(entry.server)
        except (WrkError, OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
            if entry.server.process.poll() is not None:
                reason = f"the server exited: {entry.server.log_tail()}"
            entry.status, entry.reason = "failed", reason
            self.say(f"  {entry.contender.name}: FAILED: {reason}")
            entry.server.stop()
            entry.server = None
            return None

    def rounds(self, scenario: str, entries: list[Entry], variants: list[dict[str, Any]], *,
               connections: int, cpus: str | None,
               label: Callable[[dict[str, Any], dict[str, Any]], str]) -> list[Row]:
        """Measure every (entry, variant) once per round, interleaved: each
        round loads each contender once per variant, starting one further
        along each round. A variant names its ``route``, and its ``rate``
        for a paced run."""
        rows = {(id(entry), index): self.row(scenario, entry, variant)
                for entry in entries for index, variant in enumerate(variants)}
        total = self.settings.rounds
        for round_index in range(total):
            for index, variant in enumerate(variants):
                for entry in rotate(live(entries), round_index):
                    figures = self.guarded(entry, lambda server: self.measure(
                        server, variant["route"], connections=connections, cpus=cpus,
                        rate=variant.get("rate")))
                    row = rows[(id(entry), index)]
                    if figures is None:
                        row.status, row.reason = entry.status, entry.reason
                        continue
                    row.trials.append(figures)
                    self.say(f"{scenario} round {round_index + 1}/{total} "
                             f"{entry.contender.name}: {label(row.variant, figures)}")
        result = list(rows.values())
        for row in result:
            # An entry that failed mid-way keeps no partial medians.
            if row.status == "ok":
                row.summarize()
            else:
                row.trials.clear()
        self.rows.extend(result)
        return result

    def row(self, scenario: str, entry: Entry, variant: dict[str, Any]) -> Row:
        return Row(scenario, entry.contender.name, entry.contender.family,
                   dict(variant, workers=entry.workers), entry.status, entry.reason)

    # -- the scenarios ----------------------------------------------------
    def run(self) -> None:
        chosen = self.settings.scenarios
        try:
            if {"per_core", "latency", "idle"} & set(chosen):
                self.pinned_app_scenarios(chosen)
            if "static" in chosen:
                self.static_scenario()
            if "scaling" in chosen:
                self.scaling_scenario()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def pinned_app_scenarios(self, chosen: tuple[str, ...]) -> None:
        """Scenarios 1, 5 and 4 share one set of servers: one worker each,
        pinned to CPU 0, with wrk on CPU 1."""
        self.check_quiet("per_core/latency/idle")
        self.say("starting the one-worker servers pinned to CPU 0 ...")
        entries = self.start(self.contenders, APP, ["plaintext", "json"],
                             workers=1, cpus=SERVER_CPU)
        try:
            self.warm_up(entries, "plaintext", PER_CORE_CONNECTIONS, LOAD_CPU)
            if "per_core" in chosen:
                self.per_core(entries)
            if "latency" in chosen:
                self.latency(entries)
            if "idle" in chosen:
                self.idle(entries)
        finally:
            self.stop(entries)

    def per_core(self, entries: list[Entry]) -> None:
        """Scenario 1. A busy loop shares CPU 0 with the server, so the
        server, not wrk, is the limit; per-core efficiency is then requests
        per second of server CPU."""
        self.say("scenario 1 (per_core): plaintext and json, 1 worker on CPU 0 "
                 "(shared with a busy loop), wrk on CPU 1")
        with busy_loop(SERVER_CPU):
            self.rounds(
                "per_core", entries, [{"route": "plaintext"}, {"route": "json"}],
                connections=PER_CORE_CONNECTIONS, cpus=LOAD_CPU,
                label=lambda variant, f: (f"{variant['route']:9s} {f['rps']:9,.0f} req/s  "
                                          f"{f['capacity_rps']:9,.0f} req/CPU-s  "
                                          f"p99 {f['p99_ms']:.2f} ms"))

    def latency(self, entries: list[Entry]) -> None:
        """Scenario 5: fixed request rates at 50% and 80% of asyncio's
        maximum on this setup (no busy loop), paced in wrk's Lua hook."""
        peer = next((entry for entry in live(entries) if entry.contender.family == "asyncio"),
                    None)
        if peer is None:
            self.say("scenario 5 (latency): skipped: the asyncio peer is not running")
            return
        self.say("scenario 5 (latency): asyncio's maximum first ...")
        samples = []
        for _ in range(max(1, self.settings.rounds - 1)):
            sample = self.guarded(peer, lambda server: self.measure(
                server, "plaintext", connections=PER_CORE_CONNECTIONS, cpus=LOAD_CPU))
            if sample is None:
                self.say("scenario 5 (latency): skipped: asyncio failed")
                return
            samples.append(sample["rps"])
        self.peer_max_rps = statistics.median(samples)
        self.say(f"scenario 5 (latency): asyncio's maximum {self.peer_max_rps:,.0f} req/s")
        loads = [LATENCY_LOADS[-1]] if self.settings.quick else list(LATENCY_LOADS)
        self.rounds(
            "latency", entries,
            [{"route": "plaintext", "load": load, "rate": load * self.peer_max_rps}
             for load in loads],
            connections=LATENCY_CONNECTIONS, cpus=LOAD_CPU,
            label=lambda variant, f: (f"{variant['load']:.0%} load {f['rps']:9,.0f} req/s  "
                                      f"p50 {f['p50_ms']:.3f}  p99 {f['p99_ms']:.3f}  "
                                      f"p99.9 {f['p999_ms']:.3f} ms"))

    def idle(self, entries: list[Entry]) -> None:
        """Scenario 4: memory held per idle keep-alive connection, one
        server at a time (the others idle)."""
        count = min(self.settings.idle_connections, _fd_budget())
        self.say(f"scenario 4 (idle): {count} idle keep-alive connections per server")
        for entry in entries:
            row = self.row("idle", entry, {"connections": count})
            self.rows.append(row)
            if entry.server is None:
                continue
            figures = self.guarded(entry, lambda server: self.hold_idle(server, count))
            if figures is None:
                row.status, row.reason = entry.status, entry.reason
                continue
            row.trials.append(figures)
            row.summarize()
            self.say(f"idle {entry.contender.name}: {figures['bytes_per_connection'] / 1024:.1f} "
                     f"KiB per connection, {figures['answered']}/{count} answered")

    def hold_idle(self, server: RunningServer, count: int) -> dict[str, Any]:
        pids = server.pids()
        before = rss_bytes(pids)
        connections = IdleConnections(srv.HOST, server.port, count)
        try:
            connections.open()
            time.sleep(0.5)  # let the server finish what the last ones started
            after = rss_bytes(pids)
        finally:
            connections.close()
        failed = count - connections.answered
        return {
            "rss_before_mb": before / 1e6,
            "rss_after_mb": after / 1e6,
            "bytes_per_connection": (after - before) / count,
            "answered": connections.answered,
            "errors": failed,
            "non_2xx": 0,
            "problems": connections.problems[:3],
        }

    def static_scenario(self) -> None:
        """Scenario 3: the 1 MiB file, one worker on CPU 0, wrk on CPU 1.
        No busy loop here: a file server spends most of each request
        waiting for the client to drain the socket, so sharing its core
        would measure the scheduler's wake-up delay, not the server. wrk,
        copying gigabytes a second, is the limit of req/s; the server's CPU
        per request is what tells the servers apart."""
        self.check_quiet("static")
        self.say("scenario 3 (static): starting the file servers pinned to CPU 0 ...")
        entries = self.start(self.contenders, STATIC, ["static"], workers=1, cpus=SERVER_CPU)
        try:
            self.warm_up(entries, "static", STATIC_CONNECTIONS, LOAD_CPU)
            self.rounds(
                "static", entries, [{"route": "static"}],
                connections=STATIC_CONNECTIONS, cpus=LOAD_CPU,
                label=lambda variant, f: (f"{f['rps']:7,.0f} req/s  "
                                          f"{f['mb_per_s']:7,.0f} MB/s  "
                                          f"{f['capacity_rps']:7,.0f} req/CPU-s"))
        finally:
            self.stop(entries)

    def scaling_scenario(self) -> None:
        """Scenario 2: the ~1 ms handler with 1..cores workers, nothing
        pinned; at ~1000 requests/s per worker wrk needs little CPU. Every
        worker count of every contender is up at once and loaded in turn,
        so one worker and N workers are compared within the same rounds."""
        scalable = [contender for contender in self.contenders if contender.serves_cpu]
        self.check_quiet("scaling")
        self.say(f"scenario 2 (scaling): /cpu with 1..{cpu_count()} workers, nothing pinned; "
                 "starting the servers ...")
        entries: list[Entry] = []
        try:
            for workers in range(1, cpu_count() + 1):
                entries += self.start(scalable, APP, ["cpu"], workers=workers, cpus=None)
            self.warm_up(entries, "cpu", SCALING_CONNECTIONS, None)
            self.rounds(
                "scaling", entries, [{"route": "cpu"}],
                connections=SCALING_CONNECTIONS, cpus=None,
                label=lambda variant, f: (f"x{variant['workers']} {f['rps']:7,.0f} req/s  "
                                          f"p99 {f['p99_ms']:.1f} ms"))
        finally:
            self.stop(entries)


def live(entries: list[Entry]) -> list[Entry]:
    return [entry for entry in entries if entry.server is not None]


def rotate(items: list[Entry], by: int) -> list[Entry]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


@contextlib.contextmanager
def busy_loop(cpus: str) -> Iterator[None]:
    """A pure-Python busy loop pinned to ``cpus`` while in the block: the
    server on that CPU then gets about half of it, so it is the bottleneck
    and not wrk (engine notes: how to rank fast servers on 2 cores)."""
    process = subprocess.Popen(
        ["taskset", "-c", cpus, sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def _fd_budget() -> int:
    """Idle connections the harness can open: its descriptor limit less a
    margin (servers inherit the same raised limit)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft - 256, 16)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

