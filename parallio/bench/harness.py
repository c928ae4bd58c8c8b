"""The benchmark run: start contenders, load them with wrk, collect figures.

Method (see BENCHMARKS.md and the engine notes): on this 2-core machine the
servers of one group of scenarios are started together, each idle while
another is loaded, and loaded in turn round after round (A B C, then B C A,
...), so the machine's drift over minutes falls on every contender alike;
figures are the medians over rounds, and ratios are taken against peers
measured in the same run.
"""

from __future__ import annotations

import contextlib
import functools
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
from .servers import APP, ASGI, FASTPATH, ROUTES, STATIC, WSGI, Contender, RunningServer, \
    ServerFailed
from .wrk import IDENTICAL, UNIQUE, WrkError, run_wrk

SERVER_CPU = "0"
LOAD_CPU = "1"
PER_CORE_CONNECTIONS = 64
MANY_CONNECTIONS = 1000
PIPELINE_DEPTH = 16
SCALING_CONNECTIONS = 32
STATIC_CONNECTIONS = 16
LATENCY_CONNECTIONS = 128
LATENCY_LOADS = (0.5, 0.8)
# Other processes keeping the CPUs busier than this, checked before each
# group of servers starts, make the run's figures noisy: the report says so.
QUIET_BUSY = 0.10

#: Scenarios served by one worker pinned to CPU 0, in the order they run
#: (they share one set of servers), then the others.
PINNED_SCENARIOS = ("per_core", "routes", "wsgi", "pipeline", "connections", "latency", "idle")
SCENARIOS = (*PINNED_SCENARIOS, "static", "scaling")


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
    #: Every parallio host x engine in every scenario, not only those the
    #: scenario's question needs (see :meth:`Bench.wanted`).
    all_combinations: bool = False

    @classmethod
    def for_mode(cls, quick: bool, **overrides: Any) -> "Settings":
        base: dict[str, Any]
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
    app: str
    combo: str
    default: bool
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
                    app=self.app, combo=self.combo, default=self.default,
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


@dataclass(frozen=True)
class Loaded:
    """A scenario of the pinned group measured with wrk: who takes part,
    what is asked, and whether a busy loop shares the server's CPU."""

    title: str
    members: Callable[[Contender], bool]
    variants: list[dict[str, Any]]
    busy: bool = True
    #: Which (entry, variant) pairs run; default all.
    include: Callable[["Entry", dict[str, Any]], bool] = lambda entry, variant: True


def _family(*families: str) -> Callable[[Contender], bool]:
    return lambda contender: contender.family in families


class Bench:
    def __init__(self, settings: Settings, contenders: list[Contender], wrk: str,
                 say: Progress) -> None:
        self.settings = settings
        self.contenders = contenders
        self.wrk = wrk
        self.say = say
        self.rows: list[Row] = []
        self.strictness: dict[str, dict[str, list[str]]] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="parallio-bench-"))
        self.static_dir = self.scratch / "static"
        self.static_dir.mkdir()
        self.digests = srv.write_static_files(self.static_dir)
        self.peer_max_rps: float | None = None
        #: What other processes took of the CPUs before each group of
        #: servers started: {"before": scenario group, "busy": share}.
        self.background: list[dict[str, Any]] = []
        default = next((c for c in contenders if c.default), None)
        self.default_host = default.host if default else None
        self.default_engine = default.engine if default else None

    # -- who takes part where ---------------------------------------------
    def wanted(self, contender: Contender, app: str, *, matrix: str = "host") -> bool:
        """Whether a parallio ``contender`` serving ``app`` takes part: by
        default those on the host ``auto`` picks, with either engine;
        ``matrix="both"`` adds the other hosts on auto's engine (per core),
        ``matrix="engine"`` is every host on auto's engine (scaling).
        ``--all-combinations`` takes every host x engine everywhere."""
        if contender.family != "parallio" or contender.app != app:
            return False
        if self.settings.all_combinations or self.default_host is None:
            return True
        same_host = contender.host == self.default_host
        same_engine = contender.engine == self.default_engine
        return {"host": same_host, "engine": same_engine,
                "both": same_host or same_engine}[matrix]

    def pinned_scenarios(self) -> dict[str, Loaded]:
        quick = self.settings.quick
        unique = {"route": "plaintext", "heads": UNIQUE}
        per_core = [unique, {"route": "json", "heads": UNIQUE},
                    {"route": "plaintext", "heads": IDENTICAL}]
        if quick:
            del per_core[1]
        peers = _family("asyncio", "uvloop")
        return {
            "per_core": Loaded(
                "per_core: /plaintext and /json on the fast path, 1 worker",
                lambda c: self.wanted(c, FASTPATH, matrix="both") or _family(
                    "asyncio", "uvloop", "uvicorn", "nginx")(c)
                or (c.family == "granian" and c.app == ASGI),
                per_core,
                # Plain wrk's identical heads only beside the figures they
                # might flatter: parallio's and the peers' of the same code.
                include=lambda entry, v: v["heads"] == UNIQUE or entry.contender.family in (
                    "parallio", "asyncio", "uvloop")),
            "routes": Loaded("routes: /plaintext through HttpServer routes, 1 worker",
                             lambda c: self.wanted(c, ROUTES) or c.family == "asyncio",
                             [unique]),
            "wsgi": Loaded("wsgi: /plaintext from a plain WSGI callable, 1 worker",
                           lambda c: self.wanted(c, WSGI) or c.family == "asyncio"
                           or (c.family == "granian" and c.app == WSGI), [unique]),
            "pipeline": Loaded(
                f"pipeline: {PIPELINE_DEPTH} pipelined /plaintext requests per write, 1 worker",
                lambda c: self.wanted(c, FASTPATH) or peers(c),
                [dict(unique, depth=PIPELINE_DEPTH)]),
            "connections": Loaded(
                f"connections: /plaintext over {MANY_CONNECTIONS} keep-alive connections, "
                "1 worker", lambda c: self.wanted(c, FASTPATH) or peers(c),
                [dict(unique, connections=MANY_CONNECTIONS)]),
        }

    def latency_members(self, contender: Contender) -> bool:
        return self.wanted(contender, FASTPATH) or contender.family in ("asyncio", "uvloop")

    def idle_members(self, contender: Contender) -> bool:
        return self.wanted(contender, FASTPATH) or contender.family in (
            "asyncio", "uvloop", "nginx")

    def check_quiet(self, before: str) -> None:
        busy = machine_busy(0.3 if self.settings.quick else 1.0)
        self.background.append({"before": before, "busy": busy})
        if busy > QUIET_BUSY:
            self.say(f"WARNING: other processes keep the CPUs {busy:.0%} busy: "
                     "the figures will be noisy")

    # -- servers ----------------------------------------------------------
    def start(self, contenders: list[Contender], purpose: str, routes: list[str],
              workers: int, cpus: str | None) -> list[Entry]:
        """Start every contender that can serve ``purpose`` at once, then
        check that each answers ``routes`` correctly (and, serving the app,
        probe which malformed heads it refuses)."""
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
                server = entry.server
                assert server is not None  # live() yields the entries with one
                try:
                    server.wait_ready()
                    wanted = routes if entry.contender.serves_cpu else \
                        [route for route in routes if route != "cpu"]
                    problem = srv.check_answers(server, wanted, self.digests)
                except ServerFailed as exc:
                    problem = str(exc)
                if problem:
                    entry.status, entry.reason = "failed", problem
                    server.stop()
                    entry.server = None
                    self.say(f"  {entry.contender.name} x{workers}: FAILED: {problem}")
                elif purpose == APP and entry.contender.name not in self.strictness:
                    self.strictness[entry.contender.name] = srv.probe_strictness(server.port)
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
    def measure(self, server: RunningServer, variant: dict[str, Any], *,
                connections: int, cpus: str | None) -> dict[str, Any]:
        """Load ``server`` once as ``variant`` says (its ``route``, and
        optionally ``heads``, ``depth``, ``connections``, ``rate``); wrk's
        figures plus the server's CPU and peak memory over the run."""
        pids = server.pids()
        sampler = PeakRssSampler(pids).start()
        before = cpu_times(pids)
        rate = variant.get("rate")
        try:
            result = run_wrk(self.wrk, server.url(srv.route_path(variant["route"])),
                             connections=variant.get("connections", connections),
                             duration_s=self.settings.duration, cpus=cpus, rate=rate,
                             heads=variant.get("heads", UNIQUE),
                             depth=variant.get("depth", 1))
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
        if variant.get("depth", 1) == 1:
            # With pipelining wrk times a whole batch, and its correction
            # for coordinated omission then fills bins below the minimum:
            # its percentiles mean nothing (often 0).
            figures.update({f"{name}_ms": value for name, value in result.latency_ms.items()})
        figures.update({f"lag_{name}_ms": value for name, value in result.send_lag_ms.items()})
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
               include: Callable[[Entry, dict[str, Any]], bool] = lambda entry, v: True
               ) -> list[Row]:
        """Measure every included (entry, variant) once per round,
        interleaved: each round loads each contender once per variant,
        starting one further along each round."""
        pairs = [(entry, index) for index, variant in enumerate(variants)
                 for entry in entries
                 if include(entry, variant)
                 and (entry.contender.serves_cpu or variant["route"] != "cpu")]
        rows = {(id(entry), index): self.row(scenario, entry, variants[index])
                for entry, index in pairs}
        total = self.settings.rounds
        for round_index in range(total):
            for index, variant in enumerate(variants):
                chosen = [entry for entry, at in pairs if at == index]
                for entry in rotate(live(chosen), round_index):
                    figures = self.guarded(entry, functools.partial(
                        self.measure, variant=variant, connections=connections, cpus=cpus))
                    row = rows[(id(entry), index)]
                    if figures is None:
                        row.status, row.reason = entry.status, entry.reason
                        continue
                    row.trials.append(figures)
                    self.say(f"{scenario} round {round_index + 1}/{total} "
                             f"{entry.contender.name} x{entry.workers}: "
                             f"{describe(variant, figures)}")
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
        contender = entry.contender
        return Row(scenario, contender.name, contender.family, contender.app, contender.combo,
                   contender.default, dict(variant, workers=entry.workers), entry.status,
                   entry.reason)

    # -- the scenarios ----------------------------------------------------
    def run(self) -> None:
        chosen = self.settings.scenarios
        try:
            if set(PINNED_SCENARIOS) & set(chosen):
                self.pinned_group(chosen)
            if "static" in chosen:
                self.static_scenario()
            if "scaling" in chosen:
                self.scaling_scenario()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def pinned_group(self, chosen: tuple[str, ...]) -> None:
        """The one-worker scenarios share one set of servers, each pinned to
        CPU 0, with wrk on CPU 1: every contender any of them needs is
        started once."""
        loaded = {name: spec for name, spec in self.pinned_scenarios().items()
                  if name in chosen}
        needed = [spec.members for spec in loaded.values()]
        if "latency" in chosen:
            needed.append(self.latency_members)
        if "idle" in chosen:
            needed.append(self.idle_members)
        contenders = [c for c in self.contenders if any(member(c) for member in needed)]
        self.check_quiet(",".join(name for name in PINNED_SCENARIOS if name in chosen))
        self.say(f"starting {len(contenders)} one-worker servers pinned to CPU {SERVER_CPU} ...")
        entries = self.start(contenders, APP, ["plaintext", "json", "cpu"],
                             workers=1, cpus=SERVER_CPU)
        try:
            self.warm_up(entries, "plaintext", PER_CORE_CONNECTIONS, LOAD_CPU)
            for name, spec in loaded.items():
                self.say(f"scenario {spec.title}"
                         + (f" (CPU {SERVER_CPU} shared with a busy loop)" if spec.busy else ""))
                members = [entry for entry in entries if spec.members(entry.contender)]
                with busy_loop(SERVER_CPU) if spec.busy else contextlib.nullcontext():
                    self.rounds(name, members, spec.variants, connections=PER_CORE_CONNECTIONS,
                                cpus=LOAD_CPU, include=spec.include)
            if "latency" in chosen:
                self.latency([e for e in entries if self.latency_members(e.contender)])
            if "idle" in chosen:
                self.idle([e for e in entries if self.idle_members(e.contender)])
        finally:
            self.stop(entries)

    def latency(self, entries: list[Entry]) -> None:
        """Fixed request rates at 50% and 80% of asyncio's maximum on this
        setup (no busy loop), paced in wrk's Lua hook."""
        peer = next((entry for entry in live(entries) if entry.contender.family == "asyncio"),
                    None)
        if peer is None:
            self.say("scenario latency: skipped: the asyncio peer is not running")
            return
        self.say("scenario latency: asyncio's maximum first ...")
        samples = []
        for _ in range(max(1, self.settings.rounds - 1)):
            sample = self.guarded(peer, lambda server: self.measure(
                server, {"route": "plaintext"}, connections=PER_CORE_CONNECTIONS,
                cpus=LOAD_CPU))
            if sample is None:
                self.say("scenario latency: skipped: asyncio failed")
                return
            samples.append(sample["rps"])
        self.peer_max_rps = statistics.median(samples)
        self.say(f"scenario latency: asyncio's maximum {self.peer_max_rps:,.0f} req/s; "
                 "fixed rates from it")
        loads = [LATENCY_LOADS[-1]] if self.settings.quick else list(LATENCY_LOADS)
        self.rounds(
            "latency", entries,
            [{"route": "plaintext", "heads": UNIQUE, "load": load,
              "rate": load * self.peer_max_rps} for load in loads],
            connections=LATENCY_CONNECTIONS, cpus=LOAD_CPU)

    def idle(self, entries: list[Entry]) -> None:
        """Memory held per idle keep-alive connection, one server at a time
        (the others idle)."""
        count = min(self.settings.idle_connections, _fd_budget())
        self.say(f"scenario idle: {count} idle keep-alive connections per server")
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
        """A 4 KiB and a 1 MiB file, one worker on CPU 0, wrk on CPU 1. No
        busy loop here: a file server spends much of each request waiting
        for the client to drain the socket, so sharing its core would
        measure the scheduler's wake-up delay, not the server. wrk, copying
        gigabytes a second, limits req/s for the large file; the server's
        CPU per request is what tells the servers apart."""
        members = [c for c in self.contenders
                   if self.wanted(c, FASTPATH) or c.family in ("asyncio", "nginx")]
        self.check_quiet("static")
        self.say("scenario static: starting the file servers pinned to CPU 0 ...")
        entries = self.start(members, STATIC, list(srv.STATIC_FILES), workers=1,
                             cpus=SERVER_CPU)
        try:
            self.warm_up(entries, "static4k", STATIC_CONNECTIONS, LOAD_CPU)
            self.rounds("static", entries, [{"route": route} for route in srv.STATIC_FILES],
                        connections=STATIC_CONNECTIONS, cpus=LOAD_CPU)
        finally:
            self.stop(entries)

    def scaling_scenario(self) -> None:
        """``/cpu`` (~1 ms of Python per request) with 1..cores workers and
        ``/plaintext`` with as many workers as cores, nothing pinned: the
        asyncio peer runs as that many processes. Every worker count of
        every contender is up at once and loaded in turn, so one worker and
        N workers are compared within the same rounds."""
        cores = cpu_count()
        members = [c for c in self.contenders
                   if self.wanted(c, FASTPATH, matrix="engine") or c.family == "asyncio"]
        counts = [cores] if self.settings.quick else list(range(1, cores + 1))
        self.check_quiet("scaling")
        self.say(f"scenario scaling: /cpu with {counts[0]}..{cores} workers and /plaintext "
                 f"with {cores}, nothing pinned; starting the servers ...")
        entries: list[Entry] = []
        try:
            for workers in counts:
                entries += self.start(members, APP, ["cpu"], workers=workers, cpus=None)
            self.warm_up(entries, "cpu", SCALING_CONNECTIONS, None)
            self.rounds(
                "scaling", entries,
                [{"route": "cpu", "connections": SCALING_CONNECTIONS},
                 {"route": "plaintext", "connections": PER_CORE_CONNECTIONS}],
                connections=SCALING_CONNECTIONS, cpus=None,
                include=lambda entry, v: v["route"] == "cpu" or entry.workers == cores)
        finally:
            self.stop(entries)


def describe(variant: dict[str, Any], figures: dict[str, Any]) -> str:
    """One progress line's figures."""
    text = f"/{variant['route']}"
    if variant.get("heads") == IDENTICAL:
        text += " (plain wrk)"
    if "depth" in variant:
        text += f" x{variant['depth']} pipelined"
    if "connections" in variant:
        text += f" c{variant['connections']}"
    if "load" in variant:
        text += f" {variant['load']:.0%} load"
    text += f": {figures['rps']:,.0f} req/s, {figures['capacity_rps']:,.0f} req/CPU-s"
    if "p99_ms" in figures:
        text += f", p99 {figures['p99_ms']:.2f} ms"
    if "lag_p99_ms" in figures:
        text += f", send lag p99 {figures['lag_p99_ms']:.1f} ms"
    return text


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
