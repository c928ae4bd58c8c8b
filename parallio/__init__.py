"""parallio: Python callbacks on every core, fed by completion-based I/O.

PyParallel's protocol API on stock CPython: one io_uring (or epoll) engine per
worker, workers on free-threaded threads, isolated subinterpreters or
processes. See README.md.

This package is the composition root: it builds runtimes from what the main
thread registered, adapting ``http11`` protocol classes to the HTTP fast
path on the way, and re-exports the public API. HTTP is imported only when
a protocol needs it.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

from . import _context, _listen, _logging, transport
from ._version import __version__
from ._ref import ObjectRef
from ._spec import Endpoint, Supervision
from .protocol import ProtocolError
from .runtime import Runtime, WorkerStartupError, cpu_count, make_client, make_server
from .services import _hub as _services
from .services.introspect import (PROMETHEUS_CONTENT_TYPE, active_contexts, context_stats,
                                  gmtime, prometheus_text, rdtsc, socket_stats)
from .services.mainthread import (MainThreadGone, call_from_main_thread,
                                  call_from_main_thread_and_wait)
from .services.shared import (AssignmentError, ProtectionError, SharedBuffer, protect, protected,
                              share, shared, unshare)
from .services.timers import Timer, timer
from .services.work import WorkerLost, submit_work
from .trust import DEFAULT_TRUSTED, TrustedAddresses
from .transport import NotInCallback, Transport
from .worker import current_worker

__all__ = [
    "__version__", "server", "inherited_servers", "client", "register", "run", "start", "transport",
    "current_transport", "thread_seq_id", "cpu_count", "is_parallel_thread", "stats", "Runtime",
    "Transport", "Endpoint", "ProtocolError", "WorkerStartupError", "NotInCallback", "TlsConfig",
    "Supervision",
    # PyParallel's services. parallio.map, parallio.dict and parallio.list are
    # left out of * on purpose: they would shadow the builtins.
    "submit_work", "timer", "Timer", "call_from_main_thread", "call_from_main_thread_and_wait",
    "share", "shared", "unshare", "protect", "protected", "SharedBuffer", "active_contexts",
    "socket_stats", "context_stats", "rdtsc", "gmtime", "prometheus_text",
    "PROMETHEUS_CONTENT_TYPE", "AssignmentError", "ProtectionError", "WorkerLost",
    "MainThreadGone",
]

#: ``parallio.transport()`` is the module :mod:`parallio.transport` itself,
#: which is callable; this is the same function under a name type checkers
#: understand.
current_transport = transport.current


def __getattr__(name: str) -> Any:
    # Module attributes, not globals, so code in this module still gets the
    # builtins under these names.
    if name in ("map", "dict", "list"):
        from .services import shared as _shared, work as _work
        return {"map": _work.map, "dict": _shared.dict, "list": _shared.list}[name]
    if name == "TlsConfig":
        # On use: a process without TLS does not load the ssl module.
        from .tls import TlsConfig
        return TlsConfig
    raise AttributeError(f"module 'parallio' has no attribute {name!r}")


# What the main thread registered, waiting for run().
_registered: list[Endpoint] = []
_current: Runtime | None = None


def server(host: str | None = None, port: int | None = None, *, path: str | None = None,
           mode: int | None = None, fd: int | None = None, backlog: int = 1024,
           ssl: Any = None, proxy_protocol: bool = False,
           proxy_allow_ips: Union[str, Sequence[str]] = DEFAULT_TRUSTED) -> Endpoint:
    """A server every worker accepts on, listening from now on: TCP on
    ``host``:``port`` (IPv4 or IPv6; ``"::"`` takes IPv4 connections too;
    port 0 picks a free one, read it back from ``.port``), the unix socket
    at ``path`` (its permissions ``mode``, say ``0o660``), or the inherited
    listening socket ``fd``. Raises :class:`OSError` naming the address
    when it cannot listen there (in use, permission denied).

    ``ssl`` serves TLS: a :class:`parallio.tls.TlsConfig`, a module-level
    function returning an :class:`ssl.SSLContext` (each worker calls it),
    or an ``SSLContext`` (threads host only: a context cannot be sent to
    other processes or interpreters). ``proxy_protocol`` reads a PROXY
    protocol header (v1 or v2) at the start of each connection, from the
    peers in ``proxy_allow_ips`` only (addresses, networks, ``"*"``)."""
    if sum((host is not None or port is not None, path is not None, fd is not None)) != 1:
        raise TypeError("parallio.server() takes host and port, path=, or fd=")
    if _context.in_worker_import():
        return Endpoint("server", host or "", port or 0, 0, ())
    _check_main("server")
    if path is not None:
        endpoint = _listen.unix_server(path, mode, backlog)
    elif fd is not None:
        endpoint = _listen.fd_server(fd, backlog)
    elif host is None or port is None:
        raise TypeError("parallio.server() needs both host and port")
    else:
        endpoint = make_server(host, port, backlog)
    if ssl is not None:
        from .tls import ssl_source
        endpoint.tls = ssl_source(ssl)
    if proxy_protocol:
        endpoint.proxy_allowed = TrustedAddresses(proxy_allow_ips)
    return endpoint


def inherited_servers(backlog: int = 1024) -> list[Endpoint]:
    """The listening sockets systemd passed this process (socket
    activation: ``LISTEN_FDS``/``LISTEN_PID``), one server each; empty when
    it passed none. Register a protocol with each, as with :func:`server`."""
    if _context.in_worker_import():
        return []
    _check_main("inherited_servers")
    return _listen.systemd_servers(backlog)


def client(host: str, port: int) -> Endpoint:
    """A TCP connection out to ``host``:``port``, driven by a protocol."""
    if _context.in_worker_import():
        return Endpoint("client", host, port, 0, ())
    _check_main("client")
    return make_client(host, port)


def register(transport: Endpoint, protocol: Any) -> Endpoint:
    """Serve ``transport`` (from :func:`server` or :func:`client`) with
    ``protocol``: a class, its import path ``"module:Class"``, or an object
    that makes one (an :class:`~parallio.http.HttpServer`, say)."""
    if _context.in_worker_import():
        return transport
    _check_main("register")
    transport.protocol = protocol_ref(protocol)
    if transport not in _registered:
        _registered.append(transport)
    return transport


def protocol_ref(protocol: Any) -> ObjectRef:
    """How workers find ``protocol``; an ``http11 = True`` class is
    served by the HTTP fast path. A path is imported here first, so a typo
    is reported once, on the main thread, not by every worker."""
    ref = ObjectRef.of(protocol)
    target = ref.resolve() if isinstance(protocol, str) else protocol
    if isinstance(target, type) and getattr(target, "http11", False):
        from .http.fastpath import FastPathApp
        return FastPathApp(ref).__parallio_ref__()
    return ref


def start(workers: int | None = None, parallel: str = "auto", io: str = "auto",
          drain_timeout: float = 10.0, *, supervision: Supervision | None = None,
          processes: int | None = None) -> Runtime:
    """Start serving what was registered and return the running
    :class:`Runtime` (supervised from a background thread)."""
    global _current
    runtime = _take_registered(workers, parallel, io, drain_timeout, supervision, processes)
    _current = runtime
    return runtime.start()


def run(workers: int | None = None, parallel: str = "auto", io: str = "auto",
        drain_timeout: float = 10.0, *, supervision: Supervision | None = None,
        processes: int | None = None) -> None:
    """Serve what was registered on every core until SIGINT or SIGTERM (or,
    with no server, until nothing is left to do: no work item, no started
    timer), then drain and return. SIGHUP starts fresh workers and drains
    the old ones; SIGTTIN and SIGTTOU add and remove a worker.
    Where the application configured no logging, parallio's own INFO lines
    (where it listens) go to standard error.

    ``workers`` defaults to :func:`cpu_count`; ``parallel`` is ``auto``,
    ``threads``, ``interpreters`` or ``processes``; ``io`` is ``auto``,
    ``uring`` or ``epoll``. ``supervision`` (a :class:`Supervision`) sets
    the worker timeout and the limits past which a worker is replaced;
    ``processes=P`` runs ``workers`` isolated interpreters in each of P
    processes.

    Raises the first exception that nothing handled meanwhile -- from a work
    item without an errback, or a :func:`call_from_main_thread` -- once the
    workers have stopped (each was logged when it happened).
    """
    global _current
    if _context.in_worker_import():
        return
    # An application that configured no logging still learns where it
    # listens and what was chosen for it.
    _logging.configure_default()
    runtime = _take_registered(workers, parallel, io, drain_timeout, supervision, processes)
    _services.take_unhandled()  # logged already; this run reports its own
    _current = runtime
    try:
        runtime.run()
    finally:
        _current = None
    _services.raise_unhandled()


def _take_registered(workers: int | None, parallel: str, io: str, drain_timeout: float,
                     supervision: Supervision | None, processes: int | None) -> Runtime:
    _check_main("run")
    refs = _services.pending_refs()
    if not _registered and refs is None:
        raise RuntimeError("nothing to run: register a protocol with a server or client, "
                           "submit work or start a timer first")
    endpoints = list(_registered)
    _registered.clear()
    return Runtime(endpoints, workers, parallel, io, drain_timeout, extras={"refs": refs or []},
                   supervision=supervision, processes=processes)


def _check_main(name: str) -> None:
    if current_worker() is not None:
        raise RuntimeError(f"parallio.{name}() belongs to the main thread, not to a worker")


def thread_seq_id() -> int:
    """The running worker's number (1..workers); 0 on the main thread."""
    worker = current_worker()
    return 0 if worker is None else worker.seq_id


def is_parallel_thread() -> bool:
    """True inside a worker (a parallel context), False on the main thread."""
    return current_worker() is not None


def stats() -> list[dict[str, Any]]:
    """Per-worker counters of the running runtime (main thread only)."""
    _check_main("stats")
    if _current is None:
        raise RuntimeError("parallio is not running")
    return _current.stats()
