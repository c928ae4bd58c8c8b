"""A worker's pool of threads for code that blocks, and the way back.

A worker's loop is one thread: a callback that blocks (a WSGI application
waiting on a database) stalls every connection of the worker. A
:class:`ThreadPool` runs such calls on threads of their own and brings
their results back to the loop: threads never touch the loop's state,
they hand it calls (:meth:`ThreadPool.call_soon_threadsafe`) that the
loop runs in order, woken through a socket pair its engine reads (one
byte per batch of calls, not per call).

One pool per worker (``loop.extension(ThreadPool)``), started lazily, up
to :attr:`ThreadPool.size` threads. A job that overruns its deadline can
be abandoned: it finishes on its own thread, which then ends, and a new
thread takes its place so the pool keeps its size. Threads of a GIL build
take turns on the interpreter's lock: the pool gives concurrency for
blocking I/O, not CPU parallelism (in the interpreters host, each
interpreter's threads share that interpreter's own lock).
"""

from __future__ import annotations

import _thread
import logging
import queue
import socket
import threading
from typing import Any, Callable, Optional, Protocol

from .transport import ProtocolLoop

__all__ = ["ThreadPool", "Job", "PoolLoop", "DEFAULT_THREADS"]

log = logging.getLogger("parallio")

#: Threads per worker unless asked otherwise (waitress's default; gunicorn's
#: gthread workers are usually given 2 to 4 per core).
DEFAULT_THREADS = 4
# At most this many abandoned jobs are replaced by new threads at once: a
# handler that hangs on every request must not make threads without bound.
_REPLACEMENTS_PER_THREAD = 1
# Seconds threads get to end when the worker stops.
_JOIN_TIMEOUT = 1.0
_STOP = object()


class PoolLoop(ProtocolLoop, Protocol):
    """A loop that can run something when it closes (the pool's threads end then)."""

    close_callbacks: list[Callable[[], None]]


class Job:
    """Something to run on a pool thread: :meth:`run`, overridden."""

    __slots__ = ("running", "abandoned")

    def __init__(self) -> None:
        self.running = False
        #: Set on the loop thread by :meth:`ThreadPool.abandon`; a job may
        #: look at it to stop early. Its results must be dropped.
        self.abandoned = False

    def run(self) -> None:
        raise NotImplementedError


class ThreadPool:
    """One worker's threads; see the module docstring."""

    def __init__(self, loop: PoolLoop) -> None:
        self.loop = loop
        self.size = DEFAULT_THREADS
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0          # threads waiting for a job
        self._replacements = 0  # threads started in place of abandoned jobs' still running
        self._started = 0
        self._calls: list[tuple[Callable[..., Any], tuple]] = []
        self._woken = False
        self._closed = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        engine = loop.engine
        self._handle = engine.open(self._wake_reader.fileno())
        engine.start_reading(self._handle, self._on_wake)
        loop.close_callbacks.append(self.shutdown)

    def ensure(self, threads: int) -> None:
        """Let the pool grow to at least ``threads`` threads."""
        if threads < 1:
            raise ValueError(f"a thread pool needs at least 1 thread, not {threads}")
        self.size = max(self.size, threads) if self._started else threads

    # -- the loop's side --------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Run ``job.run()`` on a pool thread (from the loop thread)."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # a thread that finished its last job takes this one
                start = False
            else:
                start = len(self._threads) < self.size + self._replacements
        if start:
            self._start_thread()
        self._jobs.put(job)

    def abandon(self, job: Job) -> None:
        """Give up on ``job`` (from the loop thread): it is dropped if it has
        not started, else left to finish on its thread, which then ends; a
        new thread takes its place (within limits)."""
        if job.abandoned:
            return
        job.abandoned = True
        with self._lock:
            replace = job.running and self._replacements < self.size * _REPLACEMENTS_PER_THREAD
            if replace:
                self._replacements += 1
        if replace:
            self._start_thread()

    def _start_thread(self) -> None:
        self._started += 1
        seq = getattr(self.loop, "seq_id", 0)
        thread = threading.Thread(target=self._serve, name=f"parallio-worker-{seq}-thread-"
                                  f"{self._started}", daemon=_daemon_threads_allowed())
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _on_wake(self, data: bytes | int) -> None:
        if data.__class__ is not bytes or not data:
            return  # the pair closed: the pool is shutting down
        with self._lock:
            calls, self._calls = self._calls, []
            self._woken = False
        for function, args in calls:
            try:
                function(*args)
            except Exception:
                log.exception("a call from a pool thread failed: %r", function)

    # -- the threads' side ------------------------------------------------------
    def call_soon_threadsafe(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread, after the calls made
        before it (from any thread)."""
        with self._lock:
            if self._closed:
                return
            self._calls.append((function, args))
            if self._woken:
                return
            self._woken = True
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already, or the pool is closed

    def _serve(self) -> None:
        thread = threading.current_thread()
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                if not job.abandoned:
                    job.running = True
                    try:
                        job.run()
                    except BaseException:
                        log.exception("a pool job failed")
                    job.running = False
                with self._lock:
                    if job.abandoned and self._replacements:
                        # A thread took this one's place meanwhile: end.
                        self._replacements -= 1
                        return
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(thread)

    # -- stopping -------------------------------------------------------------
    def shutdown(self) -> None:
        """End the threads (those still running a job are waited for a
        little, then left to end on their own)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)
        busy = sum(thread.is_alive() for thread in threads)
        if busy:
            log.warning("%d pool thread(s) still running a request at shutdown; they end "
                        "when it returns", busy)
        self.loop.engine.close(self._handle)
        self._wake_reader.detach()
        self._wake_writer.close()


def _daemon_threads_allowed() -> bool:
    # Isolated subinterpreters refuse daemon threads; elsewhere a thread
    # stuck in a handler must not keep the process from exiting.
    allowed: Optional[Callable[[], bool]] = getattr(_thread, "daemon_threads_allowed", None)
    return True if allowed is None else allowed()
