"""A worker: one engine, its own listeners, its connections, one thread.

Whatever the host, a worker is started by :func:`worker_main` with one end of
a control socketpair. Workers share nothing with each other; the kernel
spreads new connections over their SO_REUSEPORT listeners, and a connection
lives its whole life on the worker that accepted it.
"""

from __future__ import annotations

import heapq
import importlib
import importlib.util
import itertools
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable

from . import _context, _control
from ._spec import Endpoint, MainModule, WorkerSpec
from .engine import make_engine
from .protocol import ProtocolSpec
from .transport import Transport

log = logging.getLogger("parallio")

#: Name under which workers load the user's main script.
MAIN_ALIAS = "__parallio_main__"


class TimerHandle:
    __slots__ = ("deadline", "callback", "args", "cancelled")

    def __init__(self, deadline: float, callback: Callable, args: tuple) -> None:
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Worker:
    def __init__(self, spec: WorkerSpec, control_fd: int) -> None:
        self.spec = spec
        self.seq_id = spec.seq_id
        self.engine = make_engine(spec.io)
        self.connections: set[Transport] = set()
        self.listeners: list[socket.socket] = []
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = itertools.count()
        self._control_fd = control_fd
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
        # Per-worker state of the layers above (HTTP timeouts, services),
        # keyed by a name of the owning module.
        self.state: dict[str, Any] = {}
        self.connections_total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.callbacks = 0
        self.callback_errors = 0

    # -- starting ---------------------------------------------------------
    def start(self) -> None:
        os.set_blocking(self._control_fd, False)
        self.engine.start_reading(self._control_fd, self._on_control)
        for endpoint in self.spec.endpoints:
            if endpoint.protocol is None:
                continue
            spec = ProtocolSpec.of(_protocol_class(endpoint))
            if endpoint.kind == "server":
                self._listen(endpoint, spec)
            elif self.seq_id == 1:
                # A client is one connection: the first worker makes it.
                self._connect(endpoint, spec)

    def _listen(self, endpoint: Endpoint, spec: ProtocolSpec) -> None:
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if endpoint.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(endpoint.address)
            sock.listen(endpoint.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.listeners.append(sock)

        def on_accept(fd: int) -> None:
            if fd < 0:
                log.warning("worker %d: accept on %r failed: %s",
                            self.seq_id, endpoint, os.strerror(-fd))
                return
            _set_nodelay(fd)
            transport = Transport(self, fd, spec)
            self.connections.add(transport)
            self.connections_total += 1
            transport.start()

        self.engine.accept(sock.fileno(), on_accept)

    def _connect(self, endpoint: Endpoint, spec: ProtocolSpec) -> None:
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        fd = sock.detach()
        transport = Transport(self, fd, spec, is_client=True)
        self.connections.add(transport)
        self.connections_total += 1

        def on_connected(result: int) -> None:
            if result == 0:
                _set_nodelay(fd)
                transport.start()
                return
            transport.protocol = spec.cls()
            try:
                raise ConnectionError(-result, f"connecting to {endpoint.host}:{endpoint.port}: "
                                               f"{os.strerror(-result)}")
            except ConnectionError:
                transport._callback_failed("connect")
            transport.abort()

        self.engine.connect(fd, endpoint.address, on_connected)

    # -- the loop ---------------------------------------------------------
    def call_later(self, delay: float, callback: Callable, *args: Any) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (handle.deadline, next(self._timer_seq), handle))
        return handle

    def run(self) -> None:
        poll = self.engine.poll
        timers = self._timers
        self.report_idle()
        while self._running:
            if timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            else:
                timeout = None
            poll(timeout)
            if timers:
                self._run_due_timers()

    def _run_due_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            handle = heapq.heappop(timers)[2]
            if handle.cancelled:
                continue
            try:
                handle.callback(*handle.args)
            except Exception:
                log.exception("worker %d: timer callback %r failed", self.seq_id, handle.callback)

    # -- bookkeeping --------------------------------------------------------
    def connection_closed(self, transport: Transport) -> None:
        self.connections.discard(transport)
        if not self.connections and (self._draining or not self.listeners):
            self.report_idle()

    def is_idle(self) -> bool:
        return not self.listeners and not self.connections and not any(
            check() for check in self.busy_checks)

    def report_idle(self) -> None:
        """Tell the main thread when this worker became idle or busy; call it
        whenever what a busy check watches may have changed."""
        if self._draining:
            if not self.connections:
                self._running = False
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
        stats = {
            "worker": self.seq_id,
            "pid": os.getpid(),
            "io": self.engine.name,
            "host": self.spec.host,
            "connections": len(self.connections),
            "connections_total": self.connections_total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "callbacks": self.callbacks,
            "callback_errors": self.callback_errors,
        }
        for provider in self.stats_providers:
            stats.update(provider())
        return stats

    # -- control messages ---------------------------------------------------
    def add_control_handler(self, kind: str, handler: Callable[..., None]) -> None:
        self._control_handlers[kind] = handler

    def _on_control(self, data: Any) -> None:
        if data.__class__ is not bytes or not data:
            # The main thread is gone: nobody is left to report to.
            log.error("worker %d: lost its main thread; stopping", self.seq_id)
            self.close_all()
            self._running = False
            return
        for message in self._control_reader.feed(data):
            self._control_handlers[message[0]](*message[1:])

    def _on_stats(self, request_id: int) -> None:
        self.send_to_main(("stats", request_id, self.seq_id, self.stats()))

    def _on_stop(self, drain_timeout: float) -> None:
        """Stop accepting, let queued sends finish, then end the loop."""
        self._draining = True
        self._close_listeners()
        for transport in list(self.connections):
            transport.close()
        self.call_later(drain_timeout, self.close_all)
        self.report_idle()

    def _close_listeners(self) -> None:
        for sock in self.listeners:
            self.engine.stop_accepting(sock.fileno())
            sock.close()
        self.listeners.clear()

    def close_all(self) -> None:
        """Drop every connection and listener now."""
        self._close_listeners()
        for transport in list(self.connections):
            transport.abort()
        self._running = False


def _set_nodelay(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a Unix socket): nothing to tune
    finally:
        sock.detach()


def _protocol_class(endpoint: Endpoint) -> type:
    assert endpoint.protocol is not None
    try:
        return endpoint.protocol.resolve()
    except Exception as exc:
        raise ImportError(
            f"worker cannot import protocol {endpoint.protocol.path!r} for {endpoint!r}: "
            f"{type(exc).__name__}: {exc}") from exc


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

    ``spec`` is given directly in the threads host; elsewhere it is the first
    message on the control socket, and the worker loads the user's modules
    itself.
    """
    seq_id = spec.seq_id if spec is not None else 0
    worker: Worker | None = None
    try:
        if spec is None:
            spec = _read_spec(control_fd)
            seq_id = spec.seq_id
            if spec.host == "processes":
                # The main process coordinates shutdown: a Ctrl-C, or a
                # SIGTERM sent to the whole process group (timeout(1),
                # systemd), must not kill workers mid-send.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if not logging.getLogger().handlers:
                logging.basicConfig(
                    level=spec.log_level,
                    format="%(asctime)s %(levelname)s parallio[%(process)d]: %(message)s")
            if spec.main_module is not None:
                load_main_module(spec.main_module)
        worker = Worker(spec, control_fd)
        _context.set_worker(worker)
        for hook in _worker_start_hooks:
            hook(worker)
        worker.start()
    except BaseException:
        failure = traceback.format_exc()
        if worker is not None:
            worker.close_all()
            worker.engine.shutdown()
        _control.write_all(control_fd, _control.encode(("failed", seq_id, failure)))
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
        worker.engine.shutdown()
        _context.set_worker(None)


#: Called with each new worker before it starts serving (services register
#: their control-message handlers this way).
_worker_start_hooks: list[Callable[[Worker], None]] = []
