"""A long run of mixed traffic against one server (``scripts/soak``): keep-alive
clients, a new connection per request, pipelining, bad requests, uploads,
slow readers, slow heads, and now and then a worker killed (SIGKILL). It
samples the server's RSS and descriptors every second and fails when

- RSS after the run (once the connections closed) is more than 5% over RSS
  at the end of the warm-up,
- descriptors do not return to their count before the load, or
- a good request fails, other than one that met a killed worker: in flight
  on it, or sent while its replacement was not serving yet (a connection
  that the kernel queued on the dead worker's listener waits for the
  replacement, and times out if that takes longer than the client waits):
  those are counted, as lost at kills.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from .._http_client import Client, encode_request
from . import Server, fds, rss, settle

#: Slack on when a killed worker's replacement was seen serving (the
#: sampler looks once a second).
KILL_GRACE = 1.0
RSS_GROWTH = 0.05


@dataclass
class Failure:
    client: str
    error: str
    #: Seconds since the start: when the request was sent, when it failed.
    sent: float
    failed: float


@dataclass
class Sample:
    at: float
    rss: int
    fds: int


@dataclass
class SoakResult:
    seconds: float
    warm_up: float
    good: int = 0
    failures: list[Failure] = field(default_factory=list)
    bad_refused: int = 0
    slow_reads: int = 0
    #: When a worker was killed, and when its replacement was seen serving
    #: (None until then).
    kills: list[list[float | None]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    baseline_fds: int = 0
    warm_rss: int = 0
    final_rss: int = 0
    final_fds: int = 0

    def excused(self, failure: Failure) -> bool:
        """Failed after a kill, sent before the replacement served."""
        return any(killed <= failure.failed
                   and (restored is None or failure.sent <= restored + KILL_GRACE)
                   for killed, restored in self.kills)

    @property
    def unexcused_failures(self) -> list[Failure]:
        return [failure for failure in self.failures if not self.excused(failure)]

    def problems(self) -> list[str]:
        found = []
        if self.final_rss > self.warm_rss * (1 + RSS_GROWTH):
            found.append(f"RSS grew from {self.warm_rss >> 20} MiB after the warm-up to "
                         f"{self.final_rss >> 20} MiB")
        if self.final_fds > self.baseline_fds:
            found.append(f"{self.final_fds} descriptors after the run, {self.baseline_fds} before")
        for failure in self.unexcused_failures[:10]:
            found.append(f"a good request failed at {failure.failed:.1f} s "
                         f"({failure.client}): {failure.error}")
        return found

    def restarts(self) -> str:
        """Seconds from each kill to its replacement serving."""
        return ", ".join("?" if restored is None else f"{restored - killed:.1f} s"
                         for killed, restored in self.kills) or "-"

    def summary(self) -> str:
        peak = max(sample.rss for sample in self.samples) if self.samples else 0
        return (f"{self.seconds:.0f} s: {self.good} good requests, {len(self.failures)} failed "
                f"({len(self.unexcused_failures)} not at a kill, "
                f"{len(self.failures) - len(self.unexcused_failures)} lost at kills), "
                f"{self.bad_refused} bad ones refused, {self.slow_reads} slow reads, {len(self.kills)} workers killed "
                f"(replaced in {self.restarts()}); "
                f"RSS warm {self.warm_rss / 2**20:.1f} MiB, peak {peak / 2**20:.1f}, "
                f"after {self.final_rss / 2**20:.1f}; fds {self.baseline_fds} before, "
                f"max {max((s.fds for s in self.samples), default=0)}, "
                f"{self.final_fds} after")


class _Traffic:
    def __init__(self, server: Server, result: SoakResult, began: float, seconds: float) -> None:
        self.address = server.address
        self.result = result
        self.began = began
        self.deadline = began + seconds
        self.lock = threading.Lock()
        #: The pids of the worker processes that answered a /who.
        self.serving: set[int] = set()

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def good(self, count: int = 1) -> None:
        with self.lock:
            self.result.good += count

    def now(self) -> float:
        return time.monotonic() - self.began

    def failed(self, who: str, error: BaseException, sent: float) -> None:
        failure = Failure(who, repr(error)[:200], sent, self.now())
        with self.lock:
            self.result.failures.append(failure)

    def loop(self, who: str, body) -> None:
        """Run ``body(connection)`` until the end, on a connection kept
        while it works, a new one after a failure."""
        connection = None
        while self.running():
            sent = self.now()
            try:
                if connection is None:
                    connection = Client(self.address, timeout=15)
                if not body(connection):
                    connection.sock.close()
                    connection = None
            except ConnectionRefusedError:
                time.sleep(0.05)  # nothing was sent: not a failed request
                connection = None
            except (OSError, ConnectionError, AssertionError, ValueError) as error:
                self.failed(who, error, sent)
                if connection is not None:
                    connection.sock.close()
                connection = None
        if connection is not None:
            connection.sock.close()

    # -- kinds of client: each returns whether to keep its connection ----------------

    def keep_alive(self, connection: Client) -> bool:
        reply = connection.get("/who")
        assert reply.status == 200, reply.status
        self.serving.add(int(reply.body.split()[1]))
        self.good()
        return True

    def fresh(self, connection: Client) -> bool:
        self.keep_alive(connection)
        return False

    def pipelined(self, connection: Client) -> bool:
        connection.send(encode_request("GET", "/who") * 16)
        for _ in range(16):
            assert connection.read().status == 200
        self.good(16)
        return True

    def upload(self, connection: Client) -> bool:
        body = os.urandom(random.randrange(1 << 16, 4 << 20))
        reply = connection.request("POST", "/upload", body=body)
        assert reply.status == 200 and reply.body == str(len(body)).encode(), reply.status
        self.good()
        return True

    def bad(self, connection: Client) -> bool:
        connection.send(random.choice([b"\x00\x01garbage\r\n\r\n", b"GET /a#frag HTTP/1.1\r\n\r\n",
                                       b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                                       b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]))
        try:
            reply = connection.read()
            refused = 400 <= reply.status < 500
        except ConnectionError:
            refused = True  # closed at once: also a refusal
        if not refused:
            raise AssertionError(f"a bad request got {reply.status}")
        with self.lock:
            self.result.bad_refused += 1
        return False

    def slow_reader(self, connection: Client) -> bool:
        """Ask for 4 MiB, read a little of it slowly, hang up."""
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        connection.send(encode_request("GET", "/big"))
        for _ in range(random.randrange(2, 10)):
            if not connection.sock.recv(16384):
                break
            time.sleep(0.1)
        with self.lock:
            self.result.slow_reads += 1
        return False

    def slow_head(self, connection: Client) -> bool:
        """Half a head, a pause, the rest: answered, within the header timeout."""
        request = encode_request("GET", "/who", [("X-Slow", "1")])
        connection.send(request[:20])
        time.sleep(random.uniform(0.5, 2.0))
        connection.send(request[20:])
        assert connection.read().status == 200
        self.good()
        return False


def soak(seconds: float, warm_up: float | None = None, kill_every: float = 15.0,
         parallel: str = "processes", workers: int = 2, io: str = "auto",
         report=print) -> SoakResult:
    """Run the mix for ``seconds`` against a new server; kill a worker every
    ``kill_every`` seconds after the warm-up (0: never)."""
    warm_up = min(seconds / 4, 60.0) if warm_up is None else warm_up
    result = SoakResult(seconds, warm_up)
    with Server(parallel=parallel, workers=workers, io=io) as server:
        result.baseline_fds = fds(server.pid)
        began = time.monotonic()
        traffic = _Traffic(server, result, began, seconds)
        kinds = {"keep-alive": 3, "fresh": 2, "pipelined": 1, "upload": 1, "bad": 1,
                 "slow_reader": 2, "slow_head": 2}
        threads = [threading.Thread(target=traffic.loop,
                                    args=(kind, getattr(traffic, kind.replace("-", "_"))))
                   for kind, count in kinds.items() for _ in range(count)]
        for thread in threads:
            thread.start()
        next_kill = began + warm_up + kill_every / 2
        victim = None
        warm_sampled = False
        while traffic.running():
            now = time.monotonic()
            sample = Sample(now - began, rss(server.pid), fds(server.pid))
            result.samples.append(sample)
            if not warm_sampled and sample.at >= warm_up:
                result.warm_rss, warm_sampled = sample.rss, True
                report(f"soak: warm-up over at {sample.at:.0f} s: RSS {sample.rss >> 20} MiB")
            # A kill once the last one's replacement serves: on a starved
            # machine a worker can take longer to start than kill_every.
            current = server.workers()
            serving = (len(current) == workers and victim not in current
                       and traffic.serving.issuperset(current))
            if serving and result.kills and result.kills[-1][1] is None:
                result.kills[-1][1] = sample.at
            if kill_every and now >= next_kill and parallel == "processes" and serving:
                victim = random.choice(current)
                result.kills.append([sample.at, None])
                os.kill(victim, signal.SIGKILL)
                next_kill = now + kill_every
            if len(result.samples) % 10 == 0:
                report(f"soak: {sample.at:.0f} s RSS {sample.rss >> 20} MiB, fds {sample.fds}, "
                       f"{result.good} good, {len(result.failures)} failed")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        for thread in threads:
            thread.join(30)
        # The connections closed: what the server keeps now is what it holds for good.
        result.final_fds = settle(lambda: fds(server.pid), result.baseline_fds, timeout=15)
        result.final_rss = settle(lambda: rss(server.pid), int(result.warm_rss * (1 + RSS_GROWTH)),
                                  timeout=10)
        status = server.stop()
        if status:
            result.failures.append(Failure("server", f"exit status {status}: {server.log[-500:]}",
                                           seconds, seconds))
    return result
