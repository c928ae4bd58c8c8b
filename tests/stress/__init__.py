"""Hostile load against a real server process, measured from outside: what
``scripts/slowloris``, ``scripts/trickle`` and ``scripts/soak`` run, and
what their short versions in ``tests/test_stress.py`` run.

The server is ``python -m parallio serve tests._stress_apps:Mixed`` in a
subprocess; its memory and descriptors are those of its process tree. Many
slow connections are held by another process (:func:`hold`, run as
``python -m tests.stress hold``), so that the clients whose latency is
measured do not share an interpreter (and its GIL) with them.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from parallio.http.parser import Limits

from .._http_client import Client, encode_request
from ..test_cli import ROOT, start_server_process

APP = "tests._stress_apps:Mixed"


def with_fd_limit(limit: int, command: list[str]) -> list[str]:
    """``command`` run with at most ``limit`` descriptors (``ulimit -n``)."""
    return ["sh", "-c", f'ulimit -n {limit} && exec "$0" "$@"', *command]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (worker processes, their children)."""
    tree, index = [pid], 0
    while index < len(tree):
        one = tree[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{one}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{one}/task/{task}/children") as children:
                    tree += [int(child) for child in children.read().split()]
            except OSError:
                pass
    return tree


def rss(pid: int) -> int:
    """Resident bytes of ``pid``'s process tree."""
    total = 0
    for one in process_tree(pid):
        try:
            with open(f"/proc/{one}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) << 10
        except OSError:
            pass  # ended meanwhile
    return total


def fds(pid: int) -> int:
    """Open descriptors of ``pid``'s process tree."""
    total = 0
    for one in process_tree(pid):
        try:
            total += len(os.listdir(f"/proc/{one}/fd"))
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid``'s process tree."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in process_tree(pid):
        try:
            with open(f"/proc/{one}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def raise_fd_limit(wanted: int) -> None:
    """As many descriptors for this process as ``wanted`` (within the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Server:
    """``python -m parallio serve`` in a subprocess, on a free port."""

    def __init__(self, *, parallel: str = "processes", workers: int = 2, io: str = "auto",
                 fd_limit: int = 16384, extra: tuple[str, ...] = ()) -> None:
        command = [sys.executable, "-m", "parallio", "serve", APP, "--parallel", parallel,
                   "--workers", str(workers), "--io", io, "--port", "0", *extra]
        self.process, self.port, _lines = start_server_process(with_fd_limit(fd_limit, command))
        self.pid = self.process.pid
        self.address = ("127.0.0.1", self.port)
        self.log = ""
        # Drain its stderr as it goes, so that logging never blocks it.
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()

    def _read_log(self) -> None:
        self.log = self.process.stderr.read()

    def workers(self) -> list[int]:
        return process_tree(self.pid)[1:]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_reader.join(5)
        return self.process.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.stop()


def settle(measure, target: int, timeout: float) -> int:
    """Poll ``measure()`` until it is at most ``target`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    value = measure()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.2)
        value = measure()
    return value


# -- slow connections, held by another process ---------------------------------------------

@dataclass
class HoldReport:
    opened: int = 0
    #: Connections the server ended (a 408 for a head that took too long).
    ended_by_server: int = 0
    #: Heads that were answered 200 (trickle mode).
    answered: int = 0
    #: Responses (or "closed") by status.
    statuses: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def unexpected(self, allowed: tuple[str, ...]) -> dict[str, int]:
        return {status: count for status, count in self.statuses.items()
                if status not in allowed}


def hold(port: int, connections: int, seconds: float, mode: str, header_bytes: int,
         pieces: int) -> HoldReport:
    """Keep ``connections`` open to 127.0.0.1:``port`` for ``seconds``.

    ``slowloris``: each sends a request line, then one small header line every
    few seconds, never ending its head; one the server ends is opened again.
    ``trickle``: each sends a ``header_bytes`` header block in ``pieces`` pieces
    spread over ``seconds``, then ends the head and reads the response.
    """
    raise_fd_limit(connections + 256)
    report = HoldReport()
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    deadline = start + seconds
    filler = b"X-Pad-%d: " + b"p" * 1000 + b"\r\n"
    line_count = max(1, header_bytes // len(filler % 0))

    def open_one(index: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.connect_ex(("127.0.0.1", port))
        except OSError:
            report.refused += 1
            sock.close()
            return
        state = {"index": index, "sent_pieces": 0, "lines": 0,
                 "next": time.monotonic() + random.random(),
                 "pending": b"GET /who HTTP/1.1\r\nHost: stress\r\n", "reply": b""}
        selector.register(sock, selectors.EVENT_READ, state)
        report.opened += 1

    def write(sock: socket.socket, state: dict) -> None:
        data = state["pending"]
        if not data:
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            return
        except OSError:
            return  # the read side sees the end
        state["pending"] = data[sent:]

    for index in range(connections):
        open_one(index)
    while time.monotonic() < deadline or (mode == "trickle" and selector.get_map()):
        if mode == "trickle" and time.monotonic() > deadline + 30:
            break
        now = time.monotonic()
        for key in list(selector.get_map().values()):
            sock, state = key.fileobj, key.data
            if now >= state["next"]:
                if mode == "slowloris":
                    state["pending"] += b"X-Slow-%d: 1\r\n" % state["sent_pieces"]
                    state["sent_pieces"] += 1
                    state["next"] = now + 2.0 + random.random()
                elif state["sent_pieces"] < pieces:
                    share = line_count // pieces + (state["sent_pieces"] < line_count % pieces)
                    first = state["lines"]
                    state["lines"] += share
                    state["pending"] += b"".join(filler % (first + n) for n in range(share))
                    state["sent_pieces"] += 1
                    state["next"] = now + seconds / (pieces + 1)
                    if state["sent_pieces"] == pieces:
                        state["pending"] += b"\r\n"
                        state["next"] = float("inf")
            write(sock, state)
        for key, _events in selector.select(timeout=0.05):
            sock, state = key.fileobj, key.data
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                state["reply"] += data
                if mode == "slowloris" or b"\r\n\r\n" not in state["reply"]:
                    continue
            status = state["reply"][9:12].decode("latin-1") or "closed"
            report.statuses[status] = report.statuses.get(status, 0) + 1
            selector.unregister(sock)
            sock.close()
            if mode == "trickle" and status == "200":
                report.answered += 1
            else:
                report.ended_by_server += 1
            if mode == "slowloris" and time.monotonic() < deadline:
                open_one(state["index"])
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()
    return report


def start_holding(port: int, connections: int, seconds: float, mode: str = "slowloris",
                  header_bytes: int = 60 * 1024, pieces: int = 8) -> subprocess.Popen:
    """:func:`hold` in another process; :func:`held` reads its report."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stress", "hold", "--port", str(port),
         "--connections", str(connections), "--seconds", str(seconds), "--mode", mode,
         "--header-bytes", str(header_bytes), "--pieces", str(pieces)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT))


def held(holder: subprocess.Popen, timeout: float) -> HoldReport:
    out, _ = holder.communicate(timeout=timeout)
    if holder.returncode:
        raise AssertionError(f"the holding process failed ({holder.returncode})")
    return HoldReport(**json.loads(out))


# -- latency of ordinary clients ------------------------------------------------------------

def latencies(address: tuple, seconds: float, clients: int = 4) -> tuple[list[float], int]:
    """Keep-alive GETs of /who from ``clients`` threads for ``seconds``:
    each request's latency in seconds, and how many failed."""
    times: list[float] = []
    failed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        mine: list[float] = []
        request = encode_request("GET", "/who")
        connection = None
        while time.monotonic() < deadline:
            try:
                if connection is None:
                    connection = Client(address, timeout=10)
                began = time.perf_counter()
                connection.send(request)
                reply = connection.read()
                mine.append(time.perf_counter() - began)
                if reply.status != 200:
                    raise ConnectionError(f"status {reply.status}")
            except (OSError, ConnectionError, AssertionError, ValueError):
                with lock:
                    failed[0] += 1
                if connection is not None:
                    connection.sock.close()
                connection = None
        if connection is not None:
            connection.sock.close()
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return times, failed[0]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class SlowlorisResult:
    idle_p99: float
    loaded_p99: float
    idle_requests: int
    loaded_requests: int
    failed: int
    held: HoldReport
    log_lines: int

    def problems(self, max_ratio: float = 2.0) -> list[str]:
        found = []
        if self.loaded_p99 > max_ratio * self.idle_p99:
            found.append(f"p99 with slow connections over {max_ratio}x idle")
        if self.failed:
            found.append(f"{self.failed} ordinary requests failed")
        unexpected = self.held.unexpected(("408",))
        if unexpected:
            found.append(f"slow connections ended otherwise than by a 408: {unexpected}")
        return found

    def summary(self) -> str:
        return (f"p99 idle {self.idle_p99 * 1e3:.2f} ms ({self.idle_requests} requests), "
                f"with slow connections {self.loaded_p99 * 1e3:.2f} ms "
                f"({self.loaded_requests} requests): {self.loaded_p99 / self.idle_p99:.2f}x; "
                f"{self.failed} failed; slow connections opened {self.held.opened}, "
                f"ended by the server {self.held.ended_by_server} {self.held.statuses}")


def slowloris(connections: int, seconds: float, parallel: str = "processes",
              workers: int = 2, io: str = "auto") -> SlowlorisResult:
    """p99 of ordinary clients on an idle server, then while ``connections``
    slow connections are held open against it (for ``seconds``)."""
    with Server(parallel=parallel, workers=workers, io=io) as server:
        latencies(server.address, 1.0)  # warm up
        idle, idle_failed = latencies(server.address, seconds)
        # Held past the header timeout (10 s), so that the server ends them too.
        holder = start_holding(server.port, connections, max(seconds + 6, 15.0))
        # Until every slow connection is open and has sent something.
        deadline = time.monotonic() + 30
        while fds(server.pid) < connections and time.monotonic() < deadline:
            time.sleep(0.2)
        loaded, loaded_failed = latencies(server.address, seconds)
        report = held(holder, timeout=seconds + 60)
        server.stop()
    return SlowlorisResult(percentile(idle, 0.99), percentile(loaded, 0.99), len(idle),
                           len(loaded), idle_failed + loaded_failed, report,
                           server.log.count("\n"))


@dataclass
class TrickleResult:
    connections: int
    header_bytes: int
    warm_rss: int
    peak_rss: int
    after_rss: int
    held: HoldReport

    def problems(self) -> list[str]:
        """Each head is answered, or refused 408 for taking longer than the
        header timeout; memory grows by at most the head limit a
        connection, and returns."""
        found = []
        unexpected = self.held.unexpected(("200", "408"))
        if unexpected or self.held.answered + self.held.statuses.get("408", 0) < self.connections:
            found.append(f"of {self.connections} heads: {self.held.statuses}")
        if self.peak_rss - self.warm_rss > self.connections * Limits().max_header_block:
            found.append("RSS grew by more than the head limit a connection")
        if self.after_rss > self.warm_rss * 1.1:
            found.append("RSS did not return to within 10% of warm")
        return found

    def summary(self) -> str:
        mib = 1 << 20
        per = (self.peak_rss - self.warm_rss) / max(1, self.connections)
        return (f"{self.connections} connections trickling {self.header_bytes >> 10} KiB heads: "
                f"RSS warm {self.warm_rss / mib:.0f} MiB, peak {self.peak_rss / mib:.0f} MiB "
                f"({per / 1024:.1f} KiB a connection), after {self.after_rss / mib:.0f} MiB; "
                f"answered {self.held.answered}, statuses {self.held.statuses}")


def trickle(connections: int, seconds: float, header_bytes: int = 60 * 1024,
            parallel: str = "processes", workers: int = 2, io: str = "auto") -> TrickleResult:
    """``connections`` each sending a ``header_bytes`` head (within the
    limits) in pieces over ``seconds``: the server's RSS then and after."""
    with Server(parallel=parallel, workers=workers, io=io,
                fd_limit=connections + 1024) as server:
        latencies(server.address, 1.0)
        warm = rss(server.pid)
        holder = start_holding(server.port, connections, seconds, mode="trickle",
                               header_bytes=header_bytes)
        peak = warm
        while holder.poll() is None:
            peak = max(peak, rss(server.pid))
            time.sleep(0.1)
        report = held(holder, timeout=60)
        after = settle(lambda: rss(server.pid), int(warm * 1.1), timeout=15)
    return TrickleResult(connections, header_bytes, warm, peak, after, report)
