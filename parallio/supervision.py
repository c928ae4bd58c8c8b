"""The worker's side of supervision: heartbeats and recycling limits.

The main thread cannot see into a worker's loop; the worker tells it. With
``Supervision.worker_timeout`` set, each worker's loop sends a heartbeat on
a timer: a loop stuck in a callback (or a process stopped by SIGSTOP) stops
sending them, and the main thread notices. With ``max_requests`` or
``max_rss`` set, the same timer checks the worker's count of requests (HTTP;
connections for other protocols) and its resident memory, and asks once to
be replaced when a limit is passed; the main thread then starts a successor
and drains this worker without dropping a connection.

One :class:`WorkerSupervision` per worker, made by a worker start hook. In
the hosts whose workers share a process, the same hook makes ``os._exit``
called from a worker log that it ends the process, and end it with a
failure status.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, NoReturn

from .worker import Worker, _worker_start_hooks, current_worker

__all__ = ["WorkerSupervision", "concurrency_limit", "resident_bytes"]

log = logging.getLogger("parallio")

# How often the limits are checked when no heartbeat is due sooner.
_LIMITS_INTERVAL = 0.25
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


class WorkerSupervision:
    """One worker's heartbeat and recycling limits."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.spec.supervision
        self.max_requests: int | None = None
        if settings.max_requests is not None:
            # Jitter spreads the replacements of workers started together.
            self.max_requests = settings.max_requests + random.randint(
                0, max(0, settings.max_requests_jitter))
        self.max_rss = settings.max_rss
        self.heartbeat = settings.heartbeat_interval()
        self.recycle_asked = False
        limits = self.max_requests is not None or self.max_rss is not None
        self.interval: float | None = None
        if self.heartbeat is not None or limits:
            self.interval = min(self.heartbeat or _LIMITS_INTERVAL,
                                _LIMITS_INTERVAL if limits else float("inf"))
            worker.call_later(0, self._tick)

    def _tick(self) -> None:
        worker = self.worker
        if self.heartbeat is not None:
            worker.send_to_main(("beat", worker.seq_id))
        if not self.recycle_asked:
            reason = self.limit_passed()
            if reason is not None:
                self.recycle_asked = True
                log.info("worker %d: %s; asking to be replaced", worker.seq_id, reason)
                worker.send_to_main(("recycle", worker.seq_id, reason))
        assert self.interval is not None
        worker.call_later(self.interval, self._tick)

    def served(self) -> int:
        """Requests this worker began (connections, for protocols that
        count no requests)."""
        worker = self.worker
        return worker.counters.requests or worker.connections_total

    def limit_passed(self) -> str | None:
        """Which recycling limit this worker has passed, if any."""
        if self.max_requests is not None:
            served = self.served()
            if served >= self.max_requests:
                return f"served {served} requests (--max-requests {self.max_requests})"
        if self.max_rss is not None:
            rss = resident_bytes()
            if rss > self.max_rss:
                return (f"resident memory {rss / 2**20:.0f} MB is over "
                        f"--max-rss {self.max_rss / 2**20:.0f} MB")
        return None


def concurrency_limit(loop: Any) -> int | None:
    """The connections a worker serves at once (``--limit-concurrency``),
    or None: what a protocol of the layers above checks on ``loop``."""
    spec = getattr(loop, "spec", None)
    return spec.supervision.limit_concurrency if spec is not None else None


#: The status a process ends with when a worker ends it with os._exit(0):
#: ending every worker is a failure, whatever the worker meant.
EXIT_STATUS = 70  # EX_SOFTWARE


def _guard_exit() -> None:
    """Make ``os._exit`` called from a worker that shares its process say so
    in the log, and end the process with a failure status (so a supervisor
    such as systemd restarts the server), before it ends everything."""
    real_exit = os._exit
    if getattr(real_exit, "parallio_guard", False):
        return  # the threads host: one os module for every worker

    def _exit(status: int) -> NoReturn:
        worker = current_worker()
        if worker is not None:
            code = status or EXIT_STATUS
            log.critical("worker %d called os._exit(%s): in the %s host that ends its whole "
                         "process, every worker with it; the process exits with status %d",
                         worker.seq_id, status, worker.spec.host, code)
            for handler in logging.getLogger().handlers + log.handlers:
                handler.flush()
            status = code
        real_exit(status)

    _exit.parallio_guard = True  # type: ignore[attr-defined]
    os._exit = _exit


def _make(worker: Worker) -> None:
    worker.extension(WorkerSupervision)
    if worker.spec.host in ("threads", "interpreters"):
        _guard_exit()


_worker_start_hooks.append(_make)
