"""The main thread's side: endpoints, starting and supervising workers.

The main thread never serves connections. It resolves addresses, chooses the
host and engine, starts the workers, restarts one that dies, answers their
messages (stats, main-thread calls) and, on SIGINT/SIGTERM, stops accepting,
lets in-flight sends finish within a deadline, and returns.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterable

from . import _context, _control
from ._spec import Endpoint, MainModule, WorkerSpec
from .engine import choose_engine
from .host import WorkerHandle, choose_host
from ._ref import ObjectRef

log = logging.getLogger("parallio")

DEFAULT_DRAIN_TIMEOUT = 10.0
STARTUP_TIMEOUT = 60.0
# A worker that keeps dying is restarted after a growing pause, so a bug that
# kills workers at once does not turn into a busy loop.
_RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)


class WorkerStartupError(RuntimeError):
    """A worker could not start: the message holds its traceback."""


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _resolve(host: str, port: int, passive: bool) -> tuple[int, tuple]:
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _type, _proto, _name, address = infos[0]
    return family, address


def make_server(host: str, port: int, backlog: int = 1024, *, tls: Any = None,
                proxy_allowed: Any = None) -> Endpoint:
    """A server endpoint; ``tls`` (a :data:`parallio.tls.TlsSource`) and
    ``proxy_allowed`` (:class:`parallio.trust.TrustedAddresses`) as
    :class:`~parallio._spec.Endpoint` keeps them."""
    family, address = _resolve(host, port, passive=True)
    placeholder = socket.socket(family, socket.SOCK_STREAM)
    try:
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            placeholder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Bound but never listening: it holds the port (and fixes port 0 to
        # one number for every worker) without taking connections itself.
        placeholder.bind(address)
    except BaseException:
        placeholder.close()
        raise
    address = placeholder.getsockname()
    return Endpoint("server", host, address[1], family, address, backlog,
                    tls=tls, proxy_allowed=proxy_allowed, placeholder=placeholder)


def make_client(host: str, port: int) -> Endpoint:
    family, address = _resolve(host, port, passive=False)
    return Endpoint("client", host, port, family, address)


def _main_module(refs: Iterable[ObjectRef]) -> MainModule | None:
    if not any(ref.path.partition(":")[0] == "__main__" for ref in refs):
        return None
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return MainModule(spec.name, None)
    path = getattr(main, "__file__", None)
    if not path:
        raise RuntimeError("protocols defined in an interactive session cannot be sent to "
                           "workers: define them in a module or script")
    return MainModule(None, os.path.abspath(path))


class _Slot:
    """One worker position: restarted in place when its worker dies."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.handle: WorkerHandle | None = None
        self.sock: socket.socket | None = None
        self.reader = _control.MessageReader()
        self.ready = False
        self.stopped = False
        self.idle = False
        self.info: dict[str, Any] = {}
        self.deaths: list[float] = []
        self.restart_at: float | None = None


class Runtime:
    """A set of workers serving endpoints, supervised from one thread.

    ``parallio.run()`` builds one from what was registered and runs it on the
    main thread until a signal; tests and embedders can use it directly::

        runtime = Runtime([endpoint], workers=2, parallel="processes")
        runtime.start()          # returns once every worker serves
        ...
        runtime.stop()           # drains and joins
    """

    def __init__(self, endpoints: list[Endpoint], workers: int | None = None,
                 parallel: str = "auto", io: str = "auto",
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
                 extras: dict[str, Any] | None = None) -> None:
        for endpoint in endpoints:
            if endpoint.protocol is None:
                raise ValueError(f"{endpoint!r} has no protocol: call register() first")
        self.endpoints = endpoints
        self.workers = workers or cpu_count()
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.drain_timeout = drain_timeout
        self.extras = extras or {}
        refs = [endpoint.protocol for endpoint in endpoints if endpoint.protocol]
        refs += self.extras.get("refs", [])
        self.main_module = _main_module(refs)
        modules = sorted({ref.path.partition(":")[0] for ref in refs} - {"__main__"})
        self.io, io_reason = choose_engine(io)
        host_class, host_reason = choose_host(
            parallel, modules, self.main_module.path if self.main_module else None)
        if self.main_module and self.main_module.name and host_class.name != "threads":
            modules.append(self.main_module.name)
        self.host = host_class()
        log.info("parallio: %d worker(s) on the %s host (%s), %s engine (%s)",
                 self.workers, self.host.name, host_reason, self.io, io_reason)
        self._slots = [_Slot(seq_id) for seq_id in range(1, self.workers + 1)]
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        self._write_lock = threading.Lock()
        self._stop_requested = False
        self._stopping = False
        self._supervisor: threading.Thread | None = None
        self._request_ids = itertools.count(1)
        self._replies: dict[int, dict[int, Any]] = {}
        self._replies_changed = threading.Condition()
        self._message_handlers: dict[str, Callable[..., None]] = {}
        self._pending_calls: list[Callable[[], None]] = []
        self._finished = threading.Event()
        self.supervisor_ident: int | None = None
        # Main-side work that keeps run() going although every worker is
        # idle (queued work items, timers of services): True while pending.
        self.busy_checks: list[Callable[[], bool]] = []
        #: Called on the supervisor thread once the workers are gone.
        self.close_callbacks: list[Callable[[], None]] = []
        for hook in _runtime_hooks:
            hook(self)

    # -- starting workers -------------------------------------------------
    def _spec(self, seq_id: int) -> WorkerSpec:
        return WorkerSpec(
            seq_id=seq_id, io=self.io, host=self.host.name, endpoints=self.endpoints,
            sys_path=list(sys.path), main_module=self.main_module,
            log_level=logging.getLogger().getEffectiveLevel(), extras=self.extras)

    def _spawn(self, slot: _Slot) -> None:
        main_end, worker_end = socket.socketpair()
        spec = self._spec(slot.seq_id)
        slot.reader = _control.MessageReader()
        slot.ready = slot.stopped = slot.idle = False
        slot.sock = main_end
        self._selector.register(main_end, selectors.EVENT_READ, slot)
        if self.host.name != "threads":
            # Other hosts start a fresh interpreter that reads its spec first.
            main_end.sendall(_control.encode(spec))
        slot.handle = self.host.start_worker(worker_end.detach(), spec)

    def start(self) -> "Runtime":
        """Start every worker and return once all serve; runs the supervisor
        on a background thread. Raises :class:`WorkerStartupError` if one
        cannot start."""
        self._start_workers()
        self._supervisor = threading.Thread(target=self._supervise, name="parallio-main",
                                            daemon=True)
        self._supervisor.start()
        return self

    def _start_workers(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while not all(slot.ready for slot in self._slots):
                if time.monotonic() > deadline:
                    raise WorkerStartupError(
                        f"workers did not start within {STARTUP_TIMEOUT:.0f} s")
                self._process(0.1, starting=True)
                # A worker may die after it was ready (its first work item
                # crashed it) while the others still start.
                self._restart_due()
        except BaseException:
            self._shutdown_now()
            self._close()
            raise
        for endpoint in self.endpoints:
            log.info("parallio: %s %s", "serving" if endpoint.kind == "server" else "connecting",
                     endpoint)

    # -- the supervisor loop ------------------------------------------------
    def run(self, install_signal_handlers: bool = True) -> None:
        """Start the workers and supervise them on this thread until
        :meth:`stop`, a signal, or (with no server) until all are idle."""
        previous: dict[int, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self._start_workers()
            self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("parallio: %s received; draining", signal.Signals(signum).name)
        self.stop(wait=False)

    def _supervise(self) -> None:
        self.supervisor_ident = threading.get_ident()
        try:
            while not self._stop_requested:
                # Checked before waiting: the work may all be done already,
                # while the workers were still starting.
                if not any(e.kind == "server" for e in self.endpoints) and self._all_idle():
                    break
                self._process(self._next_restart_delay())
                self._restart_due()
            self._drain()
        finally:
            self._close()
            self._finished.set()

    def _next_restart_delay(self) -> float | None:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _all_idle(self) -> bool:
        return (all(slot.ready and slot.idle for slot in self._slots)
                and not self._pending_calls and not any(check() for check in self.busy_checks))

    def _process(self, timeout: float | None, starting: bool = False) -> None:
        for key, _events in self._selector.select(timeout):
            slot = key.data
            if slot is None:
                self._drain_wakeups()
                continue
            try:
                data = slot.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._worker_gone(slot, starting)
                continue
            for message in slot.reader.feed(data):
                self._on_message(slot, message, starting)
        calls, self._pending_calls = self._pending_calls, []
        for call in calls:
            call()

    def _drain_wakeups(self) -> None:
        try:
            while self._wakeup_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _on_message(self, slot: _Slot, message: tuple, starting: bool) -> None:
        kind = message[0]
        if kind == "ready":
            slot.ready = True
            slot.info = message[2]
            self._notify("worker_ready", slot.seq_id)
        elif kind == "failed":
            failure = message[2]
            if starting:
                raise WorkerStartupError(f"worker {slot.seq_id} failed to start:\n{failure}")
            log.error("parallio: worker %d failed to restart:\n%s", slot.seq_id, failure)
        elif kind == "idle":
            slot.idle = message[2]
        elif kind == "stopped":
            slot.stopped = True
        elif kind == "stats":
            _kind, request_id, seq_id, data = message
            with self._replies_changed:
                if request_id in self._replies:
                    self._replies[request_id][seq_id] = data
                    self._replies_changed.notify_all()
        else:
            self._message_handlers[kind](slot.seq_id, *message[1:])

    def add_message_handler(self, kind: str, handler: Callable[..., None]) -> None:
        """Handle worker messages ``(kind, ...)`` on the supervisor thread.

        The runtime itself sends two, with no arguments: ``worker_ready``
        once a worker serves (again after a restart) and ``worker_gone``
        when its control socket closes (it stopped or died).
        """
        self._message_handlers[kind] = handler

    def _notify(self, kind: str, seq_id: int) -> None:
        handler = self._message_handlers.get(kind)
        if handler is not None:
            handler(seq_id)

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the supervisor thread (thread-safe)."""
        self._pending_calls.append(call)
        self._wake()

    def _worker_gone(self, slot: _Slot, starting: bool) -> None:
        self._selector.unregister(slot.sock)
        slot.sock.close()
        slot.sock = None
        self._notify("worker_gone", slot.seq_id)
        assert slot.handle is not None
        slot.handle.join(1.0)
        if self._stopping or self._stop_requested or slot.stopped:
            slot.stopped = True
            return
        if starting and not slot.ready:
            raise WorkerStartupError(
                f"worker {slot.seq_id} {slot.handle.describe_exit()} before it was ready")
        now = time.monotonic()
        slot.deaths = [t for t in slot.deaths if now - t < 60.0] + [now]
        pause = _RESTART_BACKOFF[min(len(slot.deaths) - 1, len(_RESTART_BACKOFF) - 1)]
        log.error("parallio: worker %d %s; restarting it in %.1f s",
                  slot.seq_id, slot.handle.describe_exit(), pause)
        slot.ready = False
        slot.restart_at = now + pause

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self._spawn(slot)

    # -- talking to workers -------------------------------------------------
    def send(self, seq_id: int, message: Any) -> bool:
        """Send a control message to worker ``seq_id``; False if it is gone."""
        slot = self._slots[seq_id - 1]
        sock = slot.sock
        if sock is None:
            return False
        data = _control.encode(message)
        with self._write_lock:
            try:
                sock.sendall(data)
            except OSError:
                return False
        return True

    def _wake(self) -> None:
        try:
            self._wakeup_w.send(b"\0")
        except BlockingIOError:
            pass  # already awake
        except OSError:
            pass  # closed: the supervisor is done, stop() and call_soon() come too late

    def stats(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Per-worker counters, asked of every live worker."""
        request_id = next(self._request_ids)
        with self._replies_changed:
            self._replies[request_id] = {}
        asked = [slot.seq_id for slot in self._slots
                 if slot.ready and self.send(slot.seq_id, ("stats", request_id))]
        deadline = time.monotonic() + timeout
        on_supervisor = threading.get_ident() == self.supervisor_ident
        try:
            while True:
                with self._replies_changed:
                    replies = self._replies[request_id]
                    if len(replies) >= len(asked):
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if not on_supervisor:
                        self._replies_changed.wait(remaining)
                        continue
                self._process(min(remaining, 0.05))
        finally:
            with self._replies_changed:
                replies = self._replies.pop(request_id)
        return [replies[seq_id] for seq_id in sorted(replies)]

    @property
    def worker_info(self) -> list[dict[str, Any]]:
        return [dict(slot.info, worker=slot.seq_id) for slot in self._slots]

    # -- stopping ---------------------------------------------------------
    def stop(self, wait: bool = True) -> None:
        """Drain and stop (thread-safe). With ``wait``, return once done."""
        self._stop_requested = True
        self._wake()
        if wait and self._supervisor is not None:
            self._finished.wait()

    def join(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def _drain(self) -> None:
        self._stopping = True
        for slot in self._slots:
            self.send(slot.seq_id, ("stop", self.drain_timeout))
        deadline = time.monotonic() + self.drain_timeout + 5.0
        while any(slot.sock is not None for slot in self._slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error("parallio: workers did not stop within the drain deadline")
                break
            self._process(remaining)
        self._shutdown_now()

    def _shutdown_now(self) -> None:
        self._stopping = True
        for slot in self._slots:
            if slot.sock is not None:
                self._selector.unregister(slot.sock)
                slot.sock.close()
                slot.sock = None
        for slot in self._slots:
            if slot.handle is not None:
                slot.handle.join(5.0)
                if slot.handle.is_alive():
                    slot.handle.kill()

    def _close(self) -> None:
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        for endpoint in self.endpoints:
            if endpoint.placeholder is not None:
                endpoint.placeholder.close()
                endpoint.placeholder = None
        for callback in self.close_callbacks:
            try:
                callback()
            except Exception:
                log.exception("parallio: a close callback failed")

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


#: Called with each new :class:`Runtime` at the end of its ``__init__``:
#: services add their message handlers, busy checks and extras this way.
_runtime_hooks: list[Callable[[Runtime], None]] = []
