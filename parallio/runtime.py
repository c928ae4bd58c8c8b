"""The main thread's side: endpoints, starting and supervising workers.

The main thread never serves connections. It resolves addresses, chooses the
host and engine, makes the listening sockets, starts the workers, restarts
one that dies, answers their messages (stats, main-thread calls), and on
SIGINT/SIGTERM stops accepting, lets the connections finish within a
deadline, and returns.

Each worker position (a *slot*, numbered 1..workers) has its own listening
socket per server endpoint, in one SO_REUSEPORT group, so the kernel spreads
connections over the workers. The main thread keeps every listening socket
open while workers come and go: connections waiting in the backlog of a
worker that dies, or is replaced, are not reset but accepted by its
successor.

Talking to workers never blocks the supervisor: what it sends goes through
a per-worker :class:`~parallio._control.Outbox` of whole frames, written as
the worker reads. Workers send a heartbeat when ``worker_timeout`` is set;
one that goes silent is killed and replaced where the host can kill it
(processes), and reported where it cannot (threads and interpreters share
the process).

Besides SIGINT/SIGTERM, :meth:`Runtime.run` handles SIGHUP (start fresh
workers, which import the application anew, then drain the old ones),
SIGTTIN (one worker more) and SIGTTOU (one fewer).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterable

from . import _control, _listen, _logging
# Imported for its worker start hook (heartbeats, recycling limits), which
# must be registered in every worker's interpreter.
from . import supervision as _supervision  # noqa: F401
from ._ref import ObjectRef
from ._spec import Endpoint, MainModule, Supervision, WorkerSpec
from .engine import choose_engine
from .host import Host, InterpreterProcessesHost, WorkerHandle, choose_host

log = logging.getLogger("parallio")

DEFAULT_DRAIN_TIMEOUT = 10.0
STARTUP_TIMEOUT = 60.0
# A worker that keeps dying is restarted after a growing pause, so a bug that
# kills workers at once does not turn into a busy loop.
_RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)
# Replies to main-thread calls a worker no longer waits for pile up here at
# most; past it they are dropped, whole.
_REPLY_QUEUE_LIMIT = 16 << 20


class WorkerStartupError(RuntimeError):
    """A worker could not start: the message holds its traceback."""


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_server(host: str, port: int, backlog: int = 1024, *, tls: Any = None,
                proxy_allowed: Any = None) -> Endpoint:
    """A TCP server endpoint (see :mod:`parallio._listen` for the others);
    ``tls`` (a :data:`parallio.tls.TlsSource`) and ``proxy_allowed``
    (:class:`parallio.trust.TrustedAddresses`) as
    :class:`~parallio._spec.Endpoint` keeps them."""
    endpoint = _listen.tcp_server(host, port, backlog)
    endpoint.tls = tls
    endpoint.proxy_allowed = proxy_allowed
    return endpoint


def open_listener(endpoint: Endpoint) -> socket.socket:
    """One worker position's listening socket for ``endpoint``."""
    return _listen.open_listener(endpoint)


def make_client(host: str, port: int) -> Endpoint:
    family, address = _listen.resolve(host, port, passive=False)
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


def _log_fd() -> int:
    """The descriptor the log goes to (its first stream handler's), for
    what must be written without Python: fatal-error tracebacks."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        try:
            return stream.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            continue
    return sys.__stderr__.fileno() if sys.__stderr__ is not None else 2


class _Worker:
    """One started worker: its control channel, reply pipe and state."""

    def __init__(self, slot: "_Slot") -> None:
        self.slot = slot
        self.seq_id = slot.seq_id
        self.handle: WorkerHandle | None = None
        self.sock: socket.socket | None = None
        self.outbox = _control.Outbox(-1)
        self.reply_fd: int | None = None       # the write end of its reply pipe
        self.replies = _control.Outbox(-1, _REPLY_QUEUE_LIMIT)
        self.reader = _control.MessageReader()
        self.events = 0                         # the selector interest of sock
        self.watching_replies = False
        self.ready = False
        self.idle = False
        self.stopped = False                    # it said it ended cleanly
        self.retiring = False                   # told to stop
        self.info: dict[str, Any] = {}
        self.heard = time.monotonic()           # its last message
        self.hung_since: float | None = None    # silent past worker_timeout since
        self.drop_logged = False

    def __repr__(self) -> str:
        return f"<worker {self.seq_id}{' retiring' if self.retiring else ''}>"


class _Slot:
    """One worker position: its listeners, and the worker serving it (plus
    the successor starting to take over from it, during a replacement)."""

    def __init__(self, seq_id: int, listeners: list[socket.socket | None]) -> None:
        self.seq_id = seq_id
        self.listeners = listeners
        self.current: _Worker | None = None
        self.successor: _Worker | None = None
        self.replacing_because = ""
        self.removing = False
        self.deaths: list[float] = []
        self.restart_at: float | None = None

    def close_listeners(self) -> None:
        for sock in self.listeners:
            if sock is not None:
                sock.close()


class Runtime:
    """A set of workers serving endpoints, supervised from one thread.

    ``parallio.run()`` builds one from what was registered and runs it on the
    main thread until a signal; tests and embedders can use it directly::

        runtime = Runtime([endpoint], workers=2, parallel="processes")
        runtime.start()          # returns once every worker serves
        ...
        runtime.stop()           # drains and joins

    ``processes=P`` runs ``workers`` isolated interpreters in each of P
    processes (``workers * P`` in all): a fatal fault in one interpreter
    then ends only its process, which is restarted.
    """

    def __init__(self, endpoints: list[Endpoint], workers: int | None = None,
                 parallel: str = "auto", io: str = "auto",
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
                 extras: dict[str, Any] | None = None,
                 supervision: Supervision | None = None,
                 processes: int | None = None) -> None:
        for endpoint in endpoints:
            if endpoint.protocol is None:
                raise ValueError(f"{endpoint!r} has no protocol: call register() first")
        self.endpoints = endpoints
        self.workers = workers or cpu_count()
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if processes is not None and processes < 1:
            raise ValueError("processes must be >= 1")
        self.drain_timeout = drain_timeout
        self.supervision = supervision or Supervision()
        self.extras = extras or {}
        refs = [endpoint.protocol for endpoint in endpoints if endpoint.protocol]
        refs += self.extras.get("refs", [])
        self.main_module = _main_module(refs)
        modules = sorted({ref.path.partition(":")[0] for ref in refs} - {"__main__"})
        self.io, io_reason = choose_engine(io)
        self.host: Host
        if processes is not None:
            self.host, host_reason = InterpreterProcessesHost.make(
                parallel, processes, self.workers)
            self.workers *= processes
        else:
            host_class, host_reason = choose_host(
                parallel, modules, self.main_module.path if self.main_module else None)
            self.host = host_class()
        if self.supervision.max_rss is not None and not self.host.rss_per_worker:
            raise ValueError(f"--max-rss needs the processes host: in the {self.host.name} "
                             "host workers share their process's memory")
        log.info("%d worker(s) on the %s host (%s), %s engine (%s)",
                 self.workers, self.host.name, host_reason, self.io, io_reason)
        self._slots: dict[int, _Slot] = {}
        self._live: set[_Worker] = set()
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        self._stop_requested = False
        self._stopping = False
        self._supervisor: threading.Thread | None = None
        self._request_ids = itertools.count(1)
        self._replies: dict[int, dict[int, Any]] = {}
        self._replies_changed = threading.Condition()
        self._message_handlers: dict[str, Callable[..., None]] = {}
        # Calls for the supervisor thread, from any thread (and from signal
        # handlers): SimpleQueue is safe for both without relying on a GIL.
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # The worker whose message a handler is running for: its replies go
        # to it, even while a successor serves its position.
        self._sender: _Worker | None = None
        self._next_heartbeat_check: float | None = (
            time.monotonic() if self.supervision.worker_timeout is not None else None)
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
    def _spec(self, seq_id: int, listen_fds: list[int], reply_fd: int) -> WorkerSpec:
        return WorkerSpec(
            seq_id=seq_id, io=self.io, host=self.host.worker_host, endpoints=self.endpoints,
            sys_path=list(sys.path), main_module=self.main_module,
            log_level=logging.getLogger().getEffectiveLevel(), extras=self.extras,
            listen_fds=listen_fds, reply_fd=reply_fd, supervision=self.supervision,
            log_config=_logging.worker_logging_setup()[1])

    def _add_slot(self, seq_id: int) -> _Slot:
        listeners: list[socket.socket | None] = []
        try:
            for endpoint in self.endpoints:
                listeners.append(open_listener(endpoint) if endpoint.kind == "server" else None)
        except BaseException:
            for sock in listeners:
                if sock is not None:
                    sock.close()
            raise
        slot = self._slots[seq_id] = _Slot(seq_id, listeners)
        return slot

    def _spawn(self, slot: _Slot) -> _Worker:
        """Start a worker for ``slot``; it serves once it says it is ready."""
        worker = _Worker(slot)
        handed: list[int] = []
        main_end = worker_end = None
        try:
            main_end, worker_end = socket.socketpair()
            reply_r, reply_w = os.pipe()
            handed.append(reply_r)
            worker.reply_fd = reply_w
            listen_fds = []
            for sock in slot.listeners:
                listen_fds.append(os.dup(sock.fileno()) if sock is not None else -1)
                handed.append(listen_fds[-1])
        except BaseException:
            for fd in handed:
                if fd >= 0:
                    os.close(fd)
            for end in (main_end, worker_end):
                if end is not None:
                    end.close()
            if worker.reply_fd is not None:
                os.close(worker.reply_fd)
            raise
        main_end.setblocking(False)
        os.set_blocking(reply_w, False)
        spec = self._spec(slot.seq_id, listen_fds, reply_r)
        worker.sock = main_end
        worker.outbox = _control.Outbox(main_end.fileno())
        worker.replies = _control.Outbox(reply_w, _REPLY_QUEUE_LIMIT)
        self._selector.register(main_end, selectors.EVENT_READ, (worker, False))
        worker.events = selectors.EVENT_READ
        self._live.add(worker)
        if self.host.name != "threads":
            # Other hosts start a fresh interpreter that reads its spec first.
            worker.outbox.put(_control.encode(spec))
        try:
            # From here the host owns the worker's end, the reply pipe's read
            # end and the listener copies, failure included.
            worker.handle = self.host.start_worker(worker_end.detach(), spec)
        except BaseException:
            self._forget(worker)
            raise
        worker.heard = time.monotonic()
        return worker

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
        # Not at the top: faulthandler does not load in subinterpreters,
        # which import this module too.
        import faulthandler

        if self.host.in_process and not faulthandler.is_enabled():
            # A fatal error in one worker (a C extension's crash) ends the
            # whole process: the least the log can have is every thread's
            # stack, each worker's named after it.
            faulthandler.enable(file=_log_fd(), all_threads=True)
        try:
            for seq_id in range(1, self.workers + 1):
                slot = self._add_slot(seq_id)
                slot.current = self._spawn(slot)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not all(slot.current is not None and slot.current.ready
                          for slot in self._slots.values()):
                if time.monotonic() > deadline:
                    raise WorkerStartupError(
                        f"workers did not start within {STARTUP_TIMEOUT:.0f} s")
                self._process(0.1, starting=True)
                # A worker may die after it was ready (its first work item
                # crashed it) while the others still start.
                self._restart_due()
        except BaseException:
            # The workers that did start stop quietly: the failure is told once.
            for worker in list(self._live):
                self._send_to(worker, ("stop", 0.0, True))
            self._shutdown_now()
            self._close()
            raise
        for endpoint in self.endpoints:
            if endpoint.kind == "server":
                log.info("serving %r (%s)", endpoint, _listen.interfaces(endpoint))
            else:
                log.info("connecting %r", endpoint)

    # -- the supervisor loop ------------------------------------------------
    def run(self, install_signal_handlers: bool = True) -> None:
        """Start the workers and supervise them on this thread until
        :meth:`stop`, a signal, or (with no server) until all are idle."""
        previous: dict[signal.Signals, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            handlers = {signal.SIGINT: self._on_stop_signal, signal.SIGTERM: self._on_stop_signal,
                        signal.SIGHUP: self._on_reload_signal,
                        signal.SIGTTIN: self._on_more_signal, signal.SIGTTOU: self._on_fewer_signal}
            for signum, handler in handlers.items():
                previous[signum] = signal.signal(signum, handler)
        try:
            self._start_workers()
            self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        log.info("%s received; draining", signal.Signals(signum).name)
        self.stop(wait=False)

    def _on_reload_signal(self, _signum: int, _frame: Any) -> None:
        self.call_soon(self.reload)

    def _on_more_signal(self, _signum: int, _frame: Any) -> None:
        self.call_soon(self.add_worker)

    def _on_fewer_signal(self, _signum: int, _frame: Any) -> None:
        self.call_soon(self.remove_worker)

    def _supervise(self) -> None:
        self.supervisor_ident = threading.get_ident()
        try:
            while not self._stop_requested:
                # Checked before waiting: the work may all be done already,
                # while the workers were still starting.
                if not any(e.kind == "server" for e in self.endpoints) and self._all_idle():
                    break
                self._process(self._next_timeout())
                self._restart_due()
            self._drain()
        finally:
            self._close()
            self._finished.set()

    def _next_timeout(self) -> float | None:
        due = [slot.restart_at for slot in self._slots.values() if slot.restart_at is not None]
        if self._next_heartbeat_check is not None:
            due.append(self._next_heartbeat_check)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _all_idle(self) -> bool:
        return (all(slot.current is not None and slot.current.ready and slot.current.idle
                    for slot in self._slots.values())
                and self._calls.empty() and not any(check() for check in self.busy_checks))

    def _process(self, timeout: float | None, starting: bool = False) -> None:
        for key, events in self._selector.select(timeout):
            if key.data is None:
                self._drain_wakeups()
                continue
            worker, is_reply_pipe = key.data
            if worker.sock is None:
                continue  # gone while this batch was handled
            if is_reply_pipe:
                worker.replies.flush()
                continue
            if events & selectors.EVENT_WRITE:
                worker.outbox.flush()
            if events & selectors.EVENT_READ:
                self._read(worker, starting)
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            call()
        if self._next_heartbeat_check is not None:
            now = time.monotonic()
            if now >= self._next_heartbeat_check:
                self._check_heartbeats(now)
        self._watch_outboxes()

    def _read(self, worker: _Worker, starting: bool) -> None:
        assert worker.sock is not None
        try:
            data = worker.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._worker_gone(worker, starting)
            return
        worker.heard = time.monotonic()
        if worker.hung_since is not None:
            log.warning("worker %d answers again, after %.1f s without a heartbeat",
                        worker.seq_id, worker.heard - worker.hung_since)
            worker.hung_since = None
        for message in worker.reader.feed(data):
            self._on_message(worker, message, starting)

    def _watch_outboxes(self) -> None:
        """Watch for room where whole frames still wait to be written."""
        for worker in self._live:
            if worker.sock is None:
                continue
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if worker.outbox.pending else 0)
            if wanted != worker.events:
                self._selector.modify(worker.sock, wanted, (worker, False))
                worker.events = wanted
            pending = bool(worker.replies.pending)
            if pending != worker.watching_replies:
                assert worker.reply_fd is not None
                if pending:
                    self._selector.register(worker.reply_fd, selectors.EVENT_WRITE, (worker, True))
                else:
                    self._selector.unregister(worker.reply_fd)
                worker.watching_replies = pending

    def _drain_wakeups(self) -> None:
        try:
            while self._wakeup_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _on_message(self, worker: _Worker, message: tuple, starting: bool) -> None:
        kind = message[0]
        slot = worker.slot
        if kind == "beat":
            pass  # being heard is the point
        elif kind == "ready":
            self._ready(worker, message[2])
        elif kind == "failed":
            failure = message[2]
            if starting and worker is slot.current:
                raise WorkerStartupError(f"worker {worker.seq_id} failed to start: {failure}")
            if worker is slot.successor:
                log.error("the new worker %d failed to start (%s), so the one serving "
                          "keeps serving:\n%s", worker.seq_id, slot.replacing_because, failure)
            else:
                log.error("worker %d failed to restart:\n%s", worker.seq_id, failure)
        elif kind == "recycle":
            if worker is slot.current and not worker.retiring:
                self._replace(slot, message[2])
        elif kind == "idle":
            worker.idle = message[2]
        elif kind == "stopped":
            worker.stopped = True
        elif kind == "stats":
            _kind, request_id, seq_id, data = message
            with self._replies_changed:
                if request_id in self._replies:
                    self._replies[request_id][seq_id] = data
                    self._replies_changed.notify_all()
        else:
            self._sender = worker
            try:
                self._message_handlers[kind](worker.seq_id, *message[1:])
            finally:
                self._sender = None

    def _ready(self, worker: _Worker, info: dict[str, Any]) -> None:
        worker.ready = True
        worker.info = info
        slot = worker.slot
        if worker is slot.successor:
            slot.successor = None
            previous, slot.current = slot.current, worker
            if slot.removing:
                self._retire(worker, last_owner=True)
                return
            if previous is not None:
                # The successor accepts on the same listeners from now on.
                self._retire(previous, last_owner=False)
            log.info("worker %d replaced (%s)", worker.seq_id, slot.replacing_because)
        self._notify("worker_ready", worker.seq_id)

    def add_message_handler(self, kind: str, handler: Callable[..., None]) -> None:
        """Handle worker messages ``(kind, ...)`` on the supervisor thread.

        The runtime itself sends two, with no arguments: ``worker_ready``
        once a worker serves (again after a restart or replacement) and
        ``worker_gone`` when a position's worker stopped or died with no
        successor serving.
        """
        self._message_handlers[kind] = handler

    def _notify(self, kind: str, seq_id: int) -> None:
        handler = self._message_handlers.get(kind)
        if handler is not None:
            handler(seq_id)

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the supervisor thread (from any thread, or a
        signal handler)."""
        self._calls.put(call)
        self._wake()

    def _forget(self, worker: _Worker) -> None:
        """Close the main thread's ends of a worker's channels."""
        self._live.discard(worker)
        if worker.sock is not None:
            self._selector.unregister(worker.sock)
            worker.outbox.close()
            worker.sock.close()
            worker.sock = None
        if worker.reply_fd is not None:
            if worker.watching_replies:
                self._selector.unregister(worker.reply_fd)
                worker.watching_replies = False
            worker.replies.close()
            os.close(worker.reply_fd)
            worker.reply_fd = None

    def _worker_gone(self, worker: _Worker, starting: bool) -> None:
        self._forget(worker)
        assert worker.handle is not None
        worker.handle.join(1.0)
        slot = worker.slot
        if worker is slot.successor:
            slot.successor = None
            if not self._stopping and not worker.stopped:
                log.error("the new worker %d %s before it was ready, so the one "
                          "serving keeps serving", worker.seq_id, worker.handle.describe_exit())
            return
        if worker is not slot.current:
            # A replaced worker, done draining (or not: say so).
            if not worker.stopped and not self._stopping:
                log.warning("the replaced worker %d %s before its drain was done",
                            worker.seq_id, worker.handle.describe_exit())
            return
        slot.current = None
        self._notify("worker_gone", slot.seq_id)
        if slot.removing:
            del self._slots[slot.seq_id]
            log.info("worker %d stopped; %d worker(s) now", slot.seq_id, self.workers)
            return
        if self._stopping or self._stop_requested or worker.stopped:
            return
        if starting and not worker.ready:
            raise WorkerStartupError(
                f"worker {slot.seq_id} {worker.handle.describe_exit()} before it was ready")
        if slot.successor is not None:
            log.error("worker %d %s; its successor takes over",
                      slot.seq_id, worker.handle.describe_exit())
            return
        self._schedule_restart(slot, worker.handle.describe_exit())

    def _schedule_restart(self, slot: _Slot, what: str) -> None:
        now = time.monotonic()
        slot.deaths = [t for t in slot.deaths if now - t < 60.0] + [now]
        pause = _RESTART_BACKOFF[min(len(slot.deaths) - 1, len(_RESTART_BACKOFF) - 1)]
        log.error("worker %d %s; restarting it in %.1f s", slot.seq_id, what, pause)
        slot.restart_at = now + pause

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                try:
                    slot.current = self._spawn(slot)
                except OSError as exc:  # out of descriptors, processes...
                    self._schedule_restart(slot, f"could not be restarted ({exc})")

    # -- replacing, adding and removing workers -------------------------------
    def _retire(self, worker: _Worker, last_owner: bool) -> None:
        """Tell ``worker`` to stop accepting and drain; ``last_owner``: no
        successor takes over its listeners."""
        worker.retiring = True
        self._send_to(worker, ("stop", self.drain_timeout, last_owner))

    def _replace(self, slot: _Slot, reason: str) -> None:
        """Start a successor for ``slot``'s worker; once it serves, the old
        one drains (its connections finish) and ends."""
        if (slot.successor is not None or slot.current is None or slot.removing
                or self._stopping):
            return
        slot.replacing_because = reason
        try:
            slot.successor = self._spawn(slot)
        except OSError as exc:
            log.error("could not start a successor for worker %d (%s): %s",
                      slot.seq_id, reason, exc)

    def reload(self) -> None:
        """Start a fresh worker for every position (the application imported
        anew, in the interpreters and processes hosts); each old worker
        drains once its successor serves. A successor that fails to start
        leaves the old worker serving. On the supervisor thread (SIGHUP)."""
        if self._stopping:
            return
        if self.host.name == "threads":
            log.warning("reloading: the threads host shares its modules with the main "
                        "thread, so the fresh workers run the application as it was imported; "
                        "the interpreters and processes hosts import it anew")
        log.info("reloading: starting %d fresh worker(s)", self.workers)
        for slot in list(self._slots.values()):
            self._replace(slot, "reload")

    def add_worker(self) -> None:
        """One worker more (SIGTTIN); on the supervisor thread."""
        if self._stopping:
            return
        seq_id = self.workers + 1
        try:
            slot = self._add_slot(seq_id)
            slot.current = self._spawn(slot)
        except OSError as exc:
            self._slots.pop(seq_id, None)
            log.error("could not add a worker: %s", exc)
            return
        self.workers = seq_id
        log.info("adding worker %d", seq_id)

    def remove_worker(self) -> None:
        """One worker fewer (SIGTTOU): the last position's worker drains and
        ends; on the supervisor thread."""
        if self._stopping:
            return
        if self.workers <= 1:
            log.warning("not removing the last worker")
            return
        slot = self._slots[self.workers]
        self.workers -= 1
        slot.removing = True
        slot.restart_at = None
        # The socket closes with the last worker's copy, after it accepted
        # what waits in the backlog.
        slot.close_listeners()
        log.info("removing worker %d", slot.seq_id)
        for worker in (slot.current, slot.successor):
            if worker is not None:
                self._retire(worker, last_owner=True)
        if slot.current is None:
            if slot.successor is None:
                del self._slots[slot.seq_id]
            else:
                slot.current, slot.successor = slot.successor, None

    # -- hung workers -------------------------------------------------------
    def _check_heartbeats(self, now: float) -> None:
        timeout = self.supervision.worker_timeout
        assert timeout is not None
        self._next_heartbeat_check = now + min(1.0, timeout / 4)
        for worker in list(self._live):
            if not worker.ready or worker.hung_since is not None:
                continue
            silent = now - worker.heard
            if silent > timeout:
                worker.hung_since = worker.heard
                self._hung(worker, silent)

    def _hung(self, worker: _Worker, silent: float) -> None:
        assert worker.handle is not None
        what = f"worker {worker.seq_id} sent no heartbeat for {silent:.1f} s " \
               f"(--worker-timeout {self.supervision.worker_timeout:g})"
        if self.host.can_kill_workers:
            log.error("%s: %s", what, worker.handle.kill_note())
            worker.handle.kill()
            return
        log.error("%s: it is hung (stopped, or in a callback that does not return). "
                  "The %s host cannot stop it, its workers sharing this process: restart the "
                  "server to recover, or serve with --parallel processes to have hung workers "
                  "replaced", what, self.host.name)

    # -- talking to workers -------------------------------------------------
    def send(self, seq_id: int, message: Any) -> bool:
        """Send a control message to worker ``seq_id``; False if it is gone
        (or leaving). Never blocks: it is queued whole and written as the
        worker reads."""
        slot = self._slots.get(seq_id)
        if slot is None or slot.removing or slot.current is None:
            return False
        return self._send_to(slot.current, message)

    def _send_to(self, worker: _Worker, message: Any) -> bool:
        outbox = worker.outbox
        if not outbox.put(_control.encode(message)):
            if worker.sock is not None and not worker.drop_logged:
                worker.drop_logged = True
                log.error("worker %d does not read its control messages (%d MB "
                          "queued); dropping what more is sent to it", worker.seq_id,
                          outbox.pending >> 20)
            return False
        if outbox.pending and threading.get_ident() != self.supervisor_ident:
            self._wake()  # the supervisor watches for room
        return True

    def reply(self, seq_id: int, message: Any) -> bool:
        """Send a main-thread call's reply to the reply pipe of worker
        ``seq_id`` (the one whose message is being handled, if it is that
        worker: it waits for the answer). Never blocks; a reply nobody reads
        is queued, within a limit, and then dropped whole."""
        worker = self._sender
        if worker is None or worker.seq_id != seq_id:
            slot = self._slots.get(seq_id)
            worker = slot.current if slot is not None else None
        if worker is None or worker.reply_fd is None:
            return False
        if not worker.replies.put(_control.encode(message)):
            log.error("worker %d does not read its main-thread call replies; "
                      "dropped one", seq_id)
            return False
        if worker.replies.pending and threading.get_ident() != self.supervisor_ident:
            self._wake()
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
        asked = [seq_id for seq_id, slot in list(self._slots.items())
                 if slot.current is not None and slot.current.ready
                 and self.send(seq_id, ("stats", request_id))]
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
        return [dict(slot.current.info, worker=seq_id)
                for seq_id, slot in sorted(self._slots.items()) if slot.current is not None]

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
        for slot in self._slots.values():
            # Each socket closes with its last worker's copy, once that
            # worker has accepted what waits in the backlog.
            slot.close_listeners()
        for worker in list(self._live):
            if not worker.retiring:
                self._retire(worker, last_owner=True)
        deadline = time.monotonic() + self.drain_timeout + 5.0
        while self._live:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error("workers did not stop within the drain deadline")
                break
            self._process(remaining)
        self._shutdown_now()

    def _shutdown_now(self) -> None:
        self._stopping = True
        handles = [worker.handle for worker in self._live if worker.handle is not None]
        for worker in list(self._live):
            self._forget(worker)
        for handle in handles:
            handle.join(5.0)
            if handle.is_alive():
                handle.kill()

    def _close(self) -> None:
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        for slot in self._slots.values():
            slot.close_listeners()
        self.host.close()
        for endpoint in self.endpoints:
            _listen.release(endpoint)
        for callback in self.close_callbacks:
            try:
                callback()
            except Exception:
                log.exception("a close callback failed")

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


#: Called with each new :class:`Runtime` at the end of its ``__init__``:
#: services add their message handlers, busy checks and extras this way.
_runtime_hooks: list[Callable[[Runtime], None]] = []
