"""A worker: one engine, its own listeners, its connections, one thread.

Whatever the host, a worker is started by :func:`worker_main` with one end of
a control socketpair. Workers share nothing with each other; the kernel
spreads new connections over their SO_REUSEPORT listeners, and a connection
lives its whole life on the worker that accepted it.

A :class:`Worker` is the :class:`~parallio.transport.ProtocolLoop` its
transports run on: its engine, timers, counters and close notification.
The layers above keep their per-worker state in typed extensions
(:meth:`Worker.extension`), made on first use.

A worker whose spec names a :class:`Driver` (``extras["driver"]``) hands
its turns to it: an asyncio event loop on the worker's engine
(:mod:`parallio.loop.cores`) runs the worker's timers and polls its engine,
so the control socket, connections and services go on as before.
"""

from __future__ import annotations

import errno
import heapq
import importlib
import importlib.util
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Protocol, TypeVar

from . import _context, _control, _errors, _logging, _memory
from ._ref import ObjectRef
from ._spec import Endpoint, MainModule, WorkerSpec
from .edge import TransportFactory, transport_factory
from .engine import make_engine
from .engine.base import Handle
from .protocol import ProtocolSpec
from .stream import Cancellable, Counters, Stream
from .transport import Transport

log = logging.getLogger("parallio")

#: Name under which workers load the user's main script.
MAIN_ALIAS = "__parallio_main__"

# Accept errors that mean "out of descriptors or memory for now": accepting
# pauses (the backlog waits in the kernel) instead of spinning on them.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_BACKOFF = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
# At most one "accept failed" log line per listener this often.
_ACCEPT_LOG_INTERVAL = 10.0
# Connections a worker accepts from a shared socket per turn.
_SHARED_ACCEPT_BATCH = 4
# Accept errors after which accepting goes on (accept(2), Linux notes).
_TRANSIENT_ACCEPT_ERRORS = _EXHAUSTED | {errno.ECONNABORTED, errno.EPROTO, errno.EPERM,
                                         errno.EINTR, errno.ENETDOWN, errno.EHOSTUNREACH}
# After a burst of at least this many connections has fallen to half, free
# memory is given back to the system (once the closes have settled).
_BURST_CONNECTIONS = 16
_TRIM_DELAY = 0.5

T = TypeVar("T")


class TimerHandle:
    """A callback due at ``deadline`` (``time.monotonic()`` seconds)."""

    __slots__ = ("deadline", "seq", "callback", "args", "cancelled", "_worker")

    def __init__(self, worker: "Worker", deadline: float, seq: int,
                 callback: Callable[..., object], args: tuple) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback: Callable[..., object] | None = callback
        self.args = args
        self.cancelled = False
        self._worker = worker

    def __lt__(self, other: "TimerHandle") -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def cancel(self) -> None:
        """Drop the call; what it would have been called with goes at once
        (a cancelled timer must not keep a closed connection alive)."""
        if not self.cancelled:
            self.cancelled = True
            self.callback = None
            self.args = ()
            self._worker._timer_cancelled()


class Driver(Protocol):
    """What runs a worker's turns in place of its own loop: made with the
    worker (``extras["driver"]`` names the class), it polls the worker's
    engine and keeps the worker's timers."""

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> Cancellable: ...

    def start(self) -> None:
        """The worker is about to serve: start the program it drives."""

    def run(self) -> None:
        """Drive the worker until :meth:`stop`."""

    def stop(self) -> None:
        """End :meth:`run` after the current turn."""

    def drain(self, timeout: float) -> None:
        """The main thread asked the worker to stop within ``timeout``."""

    def busy(self) -> bool:
        """Whether the driven program still runs (the worker waits for it
        while draining)."""


class _Listener:
    __slots__ = ("sock", "handle", "endpoint", "spec", "make", "on_accept", "paused",
                 "failures", "logged_at", "suppressed")

    def __init__(self, sock: socket.socket, handle: Handle, endpoint: Endpoint,
                 spec: ProtocolSpec, make: TransportFactory) -> None:
        self.sock = sock
        self.handle = handle
        self.endpoint = endpoint
        self.spec = spec
        #: Makes its connections' transports (TLS, a PROXY header, or plain).
        self.make = make
        self.on_accept: Callable[[int], None] | None = None
        self.paused = False
        self.failures = 0          # consecutive accepts refused for lack of resources
        self.logged_at = -_ACCEPT_LOG_INTERVAL
        self.suppressed = 0        # failures not logged since the last line


class Worker:
    def __init__(self, spec: WorkerSpec, control_fd: int) -> None:
        self.spec = spec
        self.seq_id = spec.seq_id
        self.engine = make_engine(spec.io)
        self.counters = Counters()
        #: The transport whose protocol callback is running, if any.
        self.current_transport: Transport | None = None
        self.connections: set[Stream] = set()
        self.listeners: list[_Listener] = []
        self._timers: list[TimerHandle] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._control_fd = control_fd
        self._control_handle = self.engine.open(control_fd)
        self._control_reader = _control.MessageReader()
        self._control_handlers: dict[str, Callable[..., None]] = {
            "stop": self._on_stop,
            "stats": self._on_stats,
        }
        self._running = True
        self._draining = False
        self._idle_reported: bool | None = None
        # Hooks that keep the worker busy (work items, timers of services):
        # each returns True while it has something pending.
        self.busy_checks: list[Callable[[], bool]] = []
        # More counters for stats(), from the layers above (services).
        self.stats_providers: list[Callable[[], dict[str, Any]]] = []
        #: Called when the worker ends, before its engine shuts down (a
        #: thread pool ends its threads).
        self.close_callbacks: list[Callable[[], None]] = []
        self._extensions: dict[Callable[["Worker"], Any], Any] = {}
        self.connections_total = 0
        # Listening descriptors handed to this worker and not yet listened
        # on, by endpoint index: closed by close_all if never adopted.
        self._unadopted_fds = {index: fd for index, fd in enumerate(spec.listen_fds) if fd >= 0}
        #: The most connections open at once since memory was last released.
        self._peak_connections = 0
        self._trim_timer: TimerHandle | None = None
        _memory.tune_allocator()
        driver: ObjectRef | None = spec.extras.get("driver")
        #: What runs this worker's turns, if not the worker's own loop.
        self.driver: Driver | None = driver.resolve()(self) if driver is not None else None

    # -- the layers above ---------------------------------------------------
    def extension(self, kind: Callable[["Worker"], T]) -> T:
        """This worker's instance of ``kind`` (a class taking the worker),
        made on first use: how layers above keep per-worker state."""
        try:
            return self._extensions[kind]
        except KeyError:
            instance = self._extensions[kind] = kind(self)
            return instance

    def existing_extension(self, kind: type[T]) -> T | None:
        """This worker's instance of ``kind`` if one was made, else None."""
        return self._extensions.get(kind)

    # -- starting ---------------------------------------------------------
    def start(self) -> None:
        os.set_blocking(self._control_fd, False)
        self.engine.start_reading(self._control_handle, self._on_control)
        for index, endpoint in enumerate(self.spec.endpoints):
            if endpoint.protocol is None:
                continue
            spec = ProtocolSpec.of(_protocol_class(endpoint))
            if endpoint.kind == "server":
                self._listen(endpoint, spec, self._unadopted_fds.pop(index))
            elif self.seq_id == 1:
                # A client is one connection: the first worker makes it.
                self._connect(endpoint, spec)
        if self.driver is not None:
            self.driver.start()

    def _listen(self, endpoint: Endpoint, spec: ProtocolSpec, fd: int) -> None:
        # The main thread made the listening socket and keeps it open while
        # workers come and go: connections waiting in its backlog outlive a
        # worker that dies or is replaced, and its successor accepts them.
        sock = socket.socket(fileno=fd)
        make = transport_factory(endpoint.tls, endpoint.proxy_allowed)
        listener = _Listener(sock, self.engine.open(sock.fileno()), endpoint, spec, make)
        self.listeners.append(listener)

        def on_accept(fd: int) -> None:
            if fd < 0:
                # EAGAIN: another worker took the connection from a shared
                # socket first.
                if fd != -errno.EAGAIN:
                    self._accept_failed(listener, -fd)
                return
            listener.failures = 0
            self.serve_connection(fd, spec, make)

        listener.on_accept = on_accept
        self._start_accepting(listener)

    # A socket every worker accepts on is accepted from in turns: each worker
    # waits for it to be readable and accepts a few connections itself, so a
    # busy worker leaves new connections to the others. The engine's own
    # accept would not: io_uring's multishot accept goes on accepting in the
    # kernel while its worker is busy, and measured on a shared unix socket,
    # the first worker's ring took every connection.
    def _start_accepting(self, listener: _Listener) -> None:
        if listener.endpoint.fd is None:
            assert listener.on_accept is not None
            self.engine.accept(listener.handle, listener.on_accept)
        else:
            self.engine.wait_readable(listener.handle, lambda _mask: self._take_turn(listener))

    def _stop_accepting(self, listener: _Listener) -> None:
        if listener.endpoint.fd is None:
            self.engine.stop_accepting(listener.handle)
        else:
            self.engine.cancel_waits(listener.handle)

    def _take_turn(self, listener: _Listener) -> None:
        on_accept = listener.on_accept
        assert on_accept is not None
        for _ in range(_SHARED_ACCEPT_BATCH):
            try:
                # accept4 with SOCK_CLOEXEC, without a socket object.
                fd, _address = listener.sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                break
            except OSError as exc:
                code = exc.errno or errno.EIO
                on_accept(-code)
                if code not in _TRANSIENT_ACCEPT_ERRORS:
                    return  # logged; it would only fail again
            else:
                os.set_blocking(fd, False)
                on_accept(fd)
            if listener.paused or listener not in self.listeners:
                return
        self._start_accepting(listener)

    def serve_connection(self, fd: int, spec: ProtocolSpec,
                         make: TransportFactory = Transport) -> Transport:
        """Run a protocol instance of ``spec`` on the connected socket ``fd``
        (the worker now owns it), on a transport ``make`` makes (with TLS,
        say: see :func:`parallio.edge.transport_factory`)."""
        transport = make(self, self.engine.open(fd), spec)
        connections = self.connections
        connections.add(transport)
        if len(connections) > self._peak_connections:
            self._peak_connections = len(connections)
        self.connections_total += 1
        transport.start()
        if self._draining:
            transport.drain()
        return transport

    def _accept_failed(self, listener: _Listener, error: int) -> None:
        now = time.monotonic()
        if now - listener.logged_at >= _ACCEPT_LOG_INTERVAL:
            more = (f" ({listener.suppressed} more since the last report)"
                    if listener.suppressed else "")
            log.warning("worker %d: accepting on %r failed: %s%s", self.seq_id,
                        listener.endpoint, os.strerror(error), more)
            listener.logged_at = now
            listener.suppressed = 0
        else:
            listener.suppressed += 1
        if error not in _EXHAUSTED or listener.paused:
            return
        # Out of descriptors: retrying at once fails again at once. Waiting
        # connections stay in the kernel's backlog until accepting resumes.
        listener.paused = True
        self._stop_accepting(listener)
        pause = _ACCEPT_BACKOFF[min(listener.failures, len(_ACCEPT_BACKOFF) - 1)]
        listener.failures += 1
        self.call_later(pause, self._resume_accepting, listener)

    def _resume_accepting(self, listener: _Listener) -> None:
        listener.paused = False
        if listener in self.listeners:
            self._start_accepting(listener)

    def _connect(self, endpoint: Endpoint, spec: ProtocolSpec) -> None:
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if endpoint.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.detach()
        handle = self.engine.open(fd)
        transport = Transport(self, handle, spec)
        self.connections.add(transport)
        self.connections_total += 1

        def on_connected(result: int) -> None:
            if result == 0:
                transport.start()
                return
            transport.protocol = spec.cls()
            try:
                raise ConnectionError(-result, f"connecting to {endpoint.host}:{endpoint.port}: "
                                               f"{os.strerror(-result)}")
            except ConnectionError:
                transport._callback_failed("connect")
            transport.abort()

        self.engine.connect(handle, endpoint.address, on_connected)

    # -- timers -------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> TimerHandle:
        """Call ``callback(*args)`` on this worker's thread after ``delay``
        seconds (0: after the events of this turn)."""
        if self.driver is not None:
            return self.driver.call_later(delay, callback, *args)  # type: ignore[return-value]
        self._timer_seq += 1
        handle = TimerHandle(self, time.monotonic() + delay, self._timer_seq, callback, args)
        heapq.heappush(self._timers, handle)
        return handle

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        timers = self._timers
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(timers):
            # Most of the heap is dead entries (lingering closes that ended
            # early, say): rebuild it rather than wait for their deadlines.
            self._timers = [handle for handle in timers if not handle.cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _run_due_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0].deadline <= now:
            handle = heapq.heappop(timers)
            if handle.cancelled:
                self._cancelled_timers -= 1
                continue
            callback, args = handle.callback, handle.args
            handle.cancelled = True
            handle.callback = None
            handle.args = ()
            try:
                callback(*args)  # type: ignore[misc]
            except Exception:
                log.exception("worker %d: timer callback %r failed", self.seq_id, callback)
            timers = self._timers   # a compaction may have replaced the heap

    # -- the loop ---------------------------------------------------------
    def run(self) -> None:
        poll = self.engine.poll
        self.report_idle()
        if self.driver is not None:
            if self._running:
                self.driver.run()
            return
        while self._running:
            timers = self._timers
            if timers:
                timeout: float | None = max(0.0, timers[0].deadline - time.monotonic())
            else:
                timeout = None
            poll(timeout)
            if self._timers:
                self._run_due_timers()

    # -- bookkeeping --------------------------------------------------------
    def stream_closed(self, stream: Stream) -> None:
        connections = self.connections
        connections.discard(stream)
        if (self._peak_connections >= _BURST_CONNECTIONS and self._trim_timer is None
                and len(connections) * 2 <= self._peak_connections):
            self._trim_timer = self.call_later(_TRIM_DELAY, self._release_memory)
        if not connections and (self._draining or not self.listeners):
            self.report_idle()

    def _release_memory(self) -> None:
        """A burst of connections is over: what their buffers took goes back
        to the system instead of staying in this process's heap."""
        self._trim_timer = None
        self._peak_connections = len(self.connections)
        self.engine.trim()
        _memory.release_free_memory()

    def is_idle(self) -> bool:
        return not self.listeners and not self.connections and not any(
            check() for check in self.busy_checks)

    def report_idle(self) -> None:
        """Tell the main thread when this worker became idle or busy; call it
        whenever what a busy check watches may have changed."""
        if self._draining:
            if (not self.connections and not self.listeners
                    and not (self.driver is not None and self.driver.busy())):
                self._end()
            return
        idle = self.is_idle()
        if idle != self._idle_reported:
            self._idle_reported = idle
            self.send_to_main(("idle", self.seq_id, idle))

    def send_to_main(self, message: Any) -> None:
        try:
            _control.write_all(self._control_fd, _control.encode(message))
        except (BrokenPipeError, ConnectionResetError):
            # The main thread is gone; _on_control stops the worker.
            pass

    def stats(self) -> dict[str, Any]:
        counters = self.counters
        stats = {
            "worker": self.seq_id,
            "pid": os.getpid(),
            "io": self.engine.name,
            "host": self.spec.host,
            "connections": len(self.connections),
            "connections_total": self.connections_total,
            "bytes_in": counters.bytes_in,
            "bytes_out": counters.bytes_out,
            "callbacks": counters.callbacks,
            "callback_errors": counters.callback_errors,
            "requests": counters.requests,
        }
        for provider in self.stats_providers:
            stats.update(provider())
        return stats

    # -- control messages ---------------------------------------------------
    def add_control_handler(self, kind: str, handler: Callable[..., None]) -> None:
        self._control_handlers[kind] = handler

    def _on_control(self, data: bytes | int) -> None:
        if data.__class__ is not bytes or not data:
            # The main thread is gone: nobody is left to report to (unless
            # it told this worker to stop first).
            if not self._draining:
                log.error("worker %d: lost its main thread; stopping", self.seq_id)
            self.close_all()
            return
        for message in self._control_reader.feed(data):
            self._control_handlers[message[0]](*message[1:])

    def _on_stats(self, request_id: int) -> None:
        self.send_to_main(("stats", request_id, self.seq_id, self.stats()))

    def _on_stop(self, drain_timeout: float, last_owner: bool = True) -> None:
        """Stop accepting, let the connections finish what they are doing
        (each stream's :meth:`~parallio.stream.Stream.drain`), then end the
        loop; whatever is left after ``drain_timeout`` is dropped.

        ``last_owner``: no other worker will accept on these listeners (the
        server stops, or this worker's position goes), so the connections
        already waiting in their backlogs are accepted and served first;
        closing the last descriptor of a listener resets them. A worker
        replaced by a successor leaves them to it."""
        self._draining = True
        if self.driver is not None:
            self.driver.drain(drain_timeout)
        for stream in list(self.connections):
            stream.drain()
        # Connections the engine accepted in this turn of the loop are still
        # to be handed over: they are served (and drained) too, and only
        # then does the worker stop listening.
        self.call_later(0, self._stop_listening, last_owner)
        self.call_later(drain_timeout, self.close_all)

    def _stop_listening(self, last_owner: bool) -> None:
        waiting = self._take_backlog() if last_owner else []
        # Closed before anything else reaches the engine: an engine that
        # accepts by itself (io_uring's multishot accept) takes no more
        # connections from the backlog once its accept is cancelled, and
        # none it took can be left without an owner.
        self._close_listeners()
        for fd, spec, make in waiting:
            self.serve_connection(fd, spec, make)
        self.report_idle()

    def _take_backlog(self) -> list[tuple[int, ProtocolSpec, TransportFactory]]:
        """Accept the connections waiting in the listeners' backlogs."""
        waiting = []
        for listener in self.listeners:
            while True:
                try:
                    fd, _address = listener.sock._accept()  # type: ignore[attr-defined]
                except OSError:
                    break  # empty (EAGAIN), or out of descriptors
                os.set_blocking(fd, False)
                waiting.append((fd, listener.spec, listener.make))
        return waiting

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            self._stop_accepting(listener)
            listener.sock.detach()
            self.engine.close(listener.handle)
        self.listeners.clear()
        for fd in self._unadopted_fds.values():
            os.close(fd)
        self._unadopted_fds.clear()

    def run_close_callbacks(self) -> None:
        for callback in self.close_callbacks:
            try:
                callback()
            except Exception:
                log.exception("worker %d: a close callback failed", self.seq_id)

    def close_all(self) -> None:
        """Drop every connection and listener now."""
        self._close_listeners()
        for stream in list(self.connections):
            stream.abort()
        self._end()

    def _end(self) -> None:
        """End the loop after this turn."""
        self._running = False
        if self.driver is not None:
            self.driver.stop()


def _protocol_class(endpoint: Endpoint) -> Any:
    assert endpoint.protocol is not None
    try:
        return endpoint.protocol.resolve()
    except Exception as exc:
        raise ImportError(
            f"cannot import {endpoint.protocol.path!r} (for {endpoint!r}): "
            f"{type(exc).__name__}: {exc}") from exc


def current_worker() -> Worker | None:
    """The worker whose thread this is; None on the main thread."""
    return _context.local.worker


# -- bootstrap ----------------------------------------------------------------

def load_main_module(main: MainModule) -> None:
    """Load the user's main script as ``__parallio_main__`` and make
    ``__main__`` lookups find it, without running its ``__main__`` block."""
    _context.local.importing_main = True
    try:
        if main.name:
            module = importlib.import_module(main.name)
        else:
            assert main.path is not None
            module_spec = importlib.util.spec_from_file_location(MAIN_ALIAS, main.path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load the main script {main.path!r}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[MAIN_ALIAS] = module
            module_spec.loader.exec_module(module)
    finally:
        _context.local.importing_main = False
    sys.modules["__main__"] = module


def _read_spec(control_fd: int) -> WorkerSpec:
    # Exactly the first message: what the main thread sent after it (a stop
    # during a restart, work for this worker) is the worker loop's to read.
    reader = _control.MessageReader()
    wanted = 4
    while True:
        select.select([control_fd], [], [])
        data = os.read(control_fd, wanted)
        if not data:
            raise ConnectionError("the main thread went away before sending the worker spec")
        messages = reader.feed(data)
        if messages:
            return messages[0]
        wanted = reader.missing()


def worker_main(control_fd: int, spec: WorkerSpec | None = None) -> bool:
    """Run one worker until it is told to stop; False if it failed or
    crashed. Used by every host.

    ``spec`` is given directly in the threads host (and by hosts that run
    interpreters of their own); elsewhere it is the first message on the
    control socket. Outside the threads host the worker is a fresh
    interpreter that loads the user's modules itself.
    """
    seq_id = spec.seq_id if spec is not None else 0
    worker: Worker | None = None
    try:
        if spec is None:
            spec = _read_spec(control_fd)
            seq_id = spec.seq_id
        if spec.host != "threads":
            # A fresh interpreter: it sets itself up as the main one is.
            if spec.host == "processes":
                # The main process coordinates shutdown: a Ctrl-C, or a
                # SIGTERM sent to the whole process group (timeout(1),
                # systemd), must not kill workers mid-send.
                # The same for the main process's other signals: reload
                # (SIGHUP) and add/remove a worker (SIGTTIN/SIGTTOU, which
                # would otherwise stop the process).
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                               signal.SIGTTIN, signal.SIGTTOU):
                    signal.signal(signum, signal.SIG_IGN)
            _logging.configure_worker_logging((spec.log_level, spec.log_config), seq_id)
            if spec.main_module is not None:
                load_main_module(spec.main_module)
        worker = Worker(spec, control_fd)
        _context.set_worker(worker)
        for hook in _worker_start_hooks:
            hook(worker)
        worker.start()
    except BaseException as exc:
        failure = _errors.describe(exc)
        if worker is not None:
            worker.close_all()
            worker.run_close_callbacks()
            worker.engine.shutdown()
        elif spec is not None:
            for fd in spec.listen_fds:
                if fd >= 0:
                    os.close(fd)
        try:
            _control.write_all(control_fd, _control.encode(("failed", seq_id, failure)))
        except OSError:
            pass  # the main thread is gone: another worker's failure stopped it
        _context.set_worker(None)
        return False
    try:
        worker.send_to_main(("ready", seq_id, {"io": worker.engine.name, "pid": os.getpid()}))
        worker.run()
        worker.send_to_main(("stopped", seq_id))
        return True
    except BaseException:
        # Ends this worker only; the main thread notices and restarts it.
        log.exception("worker %d crashed", seq_id)
        return False
    finally:
        worker.close_all()
        worker.run_close_callbacks()
        worker.engine.shutdown()
        _context.set_worker(None)


#: Called with each new worker before it starts serving (services register
#: their control-message handlers this way).
_worker_start_hooks: list[Callable[[Worker], None]] = []

