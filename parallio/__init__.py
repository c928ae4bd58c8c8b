"""parallio: Python callbacks on every core, fed by completion-based I/O.

PyParallel's protocol API on stock CPython: one io_uring (or epoll) engine per
worker, workers on free-threaded threads, isolated subinterpreters or
processes. See README.md.
"""

from __future__ import annotations

from typing import Any

from . import _context
from ._spec import Endpoint
from .protocol import ProtocolError
from .runtime import Runtime, WorkerStartupError, cpu_count, make_client, make_server
from .protocol import ObjectRef
from .transport import Transport

__all__ = [
    "server", "client", "register", "run", "start", "transport", "thread_seq_id",
    "cpu_count", "is_parallel_thread", "stats", "Runtime", "Transport", "Endpoint",
    "ProtocolError", "WorkerStartupError",
]

# What the main thread registered, waiting for run().
_registered: list[Endpoint] = []
_current: Runtime | None = None


def server(host: str, port: int, *, backlog: int = 1024) -> Endpoint:
    """A TCP server on ``host``:``port`` (IPv4 or IPv6; port 0 picks a free
    one, read it back from ``.port``). Every worker listens on it."""
    if _context.in_worker_import():
        return Endpoint("server", host, port, 0, ())
    _check_main("server")
    return make_server(host, port, backlog)


def client(host: str, port: int) -> Endpoint:
    """A TCP connection out to ``host``:``port``, driven by a protocol."""
    if _context.in_worker_import():
        return Endpoint("client", host, port, 0, ())
    _check_main("client")
    return make_client(host, port)


def register(transport: Endpoint, protocol: Any) -> Endpoint:
    """Serve ``transport`` (from :func:`server` or :func:`client`) with
    ``protocol``: a class, or its import path ``"module:Class"``."""
    if _context.in_worker_import():
        return transport
    _check_main("register")
    transport.protocol = ObjectRef.of(protocol)
    if transport not in _registered:
        _registered.append(transport)
    return transport


def start(workers: int | None = None, parallel: str = "auto", io: str = "auto",
          drain_timeout: float = 10.0) -> Runtime:
    """Start serving what was registered and return the running
    :class:`Runtime` (supervised from a background thread)."""
    global _current
    runtime = _take_registered(workers, parallel, io, drain_timeout)
    _current = runtime
    return runtime.start()


def run(workers: int | None = None, parallel: str = "auto", io: str = "auto",
        drain_timeout: float = 10.0) -> None:
    """Serve what was registered on every core until SIGINT or SIGTERM (or,
    with no server, until nothing is left to do), then drain and return.

    ``workers`` defaults to :func:`cpu_count`; ``parallel`` is ``auto``,
    ``threads``, ``interpreters`` or ``processes``; ``io`` is ``auto``,
    ``uring`` or ``epoll``.
    """
    global _current
    if _context.in_worker_import():
        return
    runtime = _take_registered(workers, parallel, io, drain_timeout)
    _current = runtime
    try:
        runtime.run()
    finally:
        _current = None


def _take_registered(workers: int | None, parallel: str, io: str,
                     drain_timeout: float) -> Runtime:
    _check_main("run")
    if not _registered:
        raise RuntimeError("nothing to run: register a protocol with a server or client first")
    endpoints = list(_registered)
    _registered.clear()
    return Runtime(endpoints, workers, parallel, io, drain_timeout)


def _check_main(name: str) -> None:
    if _context.current_worker() is not None:
        raise RuntimeError(f"parallio.{name}() belongs to the main thread, not to a worker")


def transport() -> Transport | None:
    """The connection whose callback is running, or None outside one."""
    return _context.local.transport


def thread_seq_id() -> int:
    """The running worker's number (1..workers); 0 on the main thread."""
    worker = _context.current_worker()
    return 0 if worker is None else worker.seq_id


def is_parallel_thread() -> bool:
    """True inside a worker (a parallel context), False on the main thread."""
    return _context.current_worker() is not None


def stats() -> list[dict[str, Any]]:
    """Per-worker counters of the running runtime (main thread only)."""
    _check_main("stats")
    if _current is None:
        raise RuntimeError("parallio is not running")
    return _current.stats()
