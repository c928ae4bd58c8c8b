"""INTERIM host for the ASGI server: N workers, each a stdlib asyncio (or
uvloop) event loop with its own ``SO_REUSEPORT`` listening socket, in child
processes or in threads.

This is the stand-in until parallio's own event loop runs one loop per
worker on the completion engines (``parallio.loop.run_on_all_cores``, the
issue "asyncio on the completion engines"); then a worker runs
:func:`~parallio.asgi.serve_asgi` on that loop instead, and this module
goes. What stays the same: one lifespan per worker, run before that worker
accepts; a failing startup in any worker stops them all with the
application's message; SIGINT/SIGTERM stop every worker gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import sysconfig
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Optional, Union

from .config import AppLoadError, ASGIApp, Config, load_app
from .lifespan import LifespanFailure
from .server import serve_asgi

__all__ = ["serve", "ServeError", "new_event_loop"]

log = logging.getLogger("parallio.asgi")

# A worker that dies within this long of its start is not restarted at once.
_RESTART_BACKOFF = 1.0


class ServeError(Exception):
    """The server could not start or a worker's startup failed."""


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A fresh loop: "asyncio", "uvloop", or "auto" (uvloop when installed)."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ServeError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.new_event_loop()
    elif kind != "asyncio":
        raise ServeError(f"unknown event loop {kind!r}: use auto, asyncio or uvloop")
    return asyncio.new_event_loop()


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def _run_worker(app: ASGIApp, host: str, port: int, config: Config, loop_kind: str,
                on_ready: Callable[[], None], on_loop: Callable[[Any, Any], None]) -> None:
    """One worker: its own socket and loop, serving until stopped."""
    sock = _reuseport_socket(host, port)
    sock.listen(1024)
    sock.setblocking(False)
    loop = new_event_loop(loop_kind)
    try:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            stop = asyncio.Event()
            on_loop(loop, stop)
            await serve_asgi(app, sock, config, stop=stop, ready=on_ready)

        loop.run_until_complete(main())
    finally:
        loop.close()
        sock.close()


def _process_main(app_path: str, host: str, port: int, config: Config, loop_kind: str,
                  log_level: int, status: Connection) -> None:
    """A worker process (spawned: a fresh interpreter that imports the app)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s [worker %(process)d] "
                                                "%(message)s")
    if "" not in sys.path:
        sys.path.insert(0, "")

    def on_loop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

    try:
        app = load_app(app_path)
        _run_worker(app, host, port, config, loop_kind, lambda: status.send(("ready", "")), on_loop)
    except (LifespanFailure, AppLoadError, ServeError) as error:
        status.send(("failed", str(error)))
        sys.exit(1)
    except BaseException as error:
        log.exception("worker failed")
        status.send(("failed", f"{type(error).__name__}: {error}"))
        sys.exit(1)


class _Worker:
    """A worker as the supervisor sees it, in either flavour."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.started = time.monotonic()
        self.ready = False
        self.process: Optional[multiprocessing.process.BaseProcess] = None
        self.status: Optional[Connection] = None
        self.thread: Optional[threading.Thread] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.stop_event: Optional[asyncio.Event] = None
        self.failure: Optional[str] = None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive() and self.process.pid:
            os.kill(self.process.pid, signal.SIGTERM)
        elif self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)

    def join(self, timeout: float) -> None:
        if self.process is not None:
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        elif self.thread is not None:
            self.thread.join(timeout)


def _free_threaded() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and not getattr(
        sys, "_is_gil_enabled", lambda: True)()


def serve(app: Union[str, ASGIApp], host: str = "127.0.0.1", port: int = 8000, *,
          workers: Optional[int] = None, parallel: str = "auto", loop: str = "auto",
          config: Config = Config(), on_ready: Optional[Callable[[int], None]] = None) -> None:
    """Serve an ASGI application on ``workers`` event loops until SIGINT or
    SIGTERM. ``app`` is ``"module:attribute"`` (needed for processes, whose
    workers import it) or the application object (threads). ``on_ready``
    gets the port once every worker accepts. ServeError if a worker's
    startup fails (its lifespan's message) or the address is taken."""
    if parallel == "auto":
        if not isinstance(app, str):
            parallel, why = "threads", "the application is an object, which only threads share"
        elif _free_threaded():
            parallel, why = "threads", "this Python has no GIL"
        else:
            parallel, why = "processes", "the GIL would serialise threads"
        log.info("parallio asgi: %s host, because %s (the interim host, until parallio's own "
                 "event loop runs the workers)", parallel, why)
    if parallel == "interpreters":
        raise ServeError("--parallel interpreters needs parallio's event loop for ASGI "
                         "(not there yet); use processes or threads")
    if parallel not in ("processes", "threads"):
        raise ServeError(f"unknown --parallel {parallel!r}: use auto, processes or threads")
    if parallel == "processes" and not isinstance(app, str):
        raise ServeError("the processes host needs the application as MODULE:ATTRIBUTE")
    count = workers or len(os.sched_getaffinity(0))
    if count < 1:
        raise ServeError("--workers must be at least 1")
    probe = new_event_loop(loop)  # an unknown or missing loop fails here, once
    loop_name = type(probe).__module__.partition(".")[0]
    probe.close()
    # Threads share one application object; worker processes import their own
    # (the supervisor never runs the application's module-level code).
    app_object: Optional[ASGIApp] = None
    if parallel == "threads":
        app_object = load_app(app) if isinstance(app, str) else app

    # The port stays reserved by a bound (never listening) socket, so that
    # a worker restarted later gets the same one even if it was 0.
    reserved = _reuseport_socket(host, port)
    port = reserved.getsockname()[1]
    stopping = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stopping.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    context = multiprocessing.get_context("spawn")
    pool = [_Worker(index) for index in range(count)]

    def start(worker: _Worker) -> None:
        worker.started = time.monotonic()
        worker.ready = False
        if parallel == "processes":
            receiver, sender = context.Pipe(duplex=False)
            worker.status = receiver
            worker.process = context.Process(
                target=_process_main, name=f"parallio-asgi-{worker.index + 1}",
                args=(app, host, port, config, loop, logging.getLogger().getEffectiveLevel(), sender))
            worker.process.start()
            sender.close()
            return

        def on_loop(event_loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
            worker.loop, worker.stop_event = event_loop, stop

        def ready() -> None:
            worker.ready = True

        def thread_main() -> None:
            assert app_object is not None
            try:
                _run_worker(app_object, host, port, config, loop, ready, on_loop)
            except (LifespanFailure, ServeError) as error:
                worker.failure = str(error)
            except BaseException as error:
                log.exception("worker %d failed", worker.index + 1)
                worker.failure = f"{type(error).__name__}: {error}"

        worker.thread = threading.Thread(target=thread_main, name=f"parallio-asgi-{worker.index + 1}",
                                         daemon=True)
        worker.thread.start()

    def poll(worker: _Worker) -> None:
        status = worker.status
        while status is not None and status.poll():
            try:
                kind, message = status.recv()
            except EOFError:
                worker.status = None
                break
            if kind == "ready":
                worker.ready = True
            else:
                worker.failure = message

    try:
        for worker in pool:
            start(worker)
        announced = False
        while not stopping.is_set():
            sentinels = [w.status for w in pool if w.status is not None]
            if sentinels:
                wait(sentinels, timeout=0.2)
            else:
                stopping.wait(0.05)
            for worker in pool:
                poll(worker)
                if worker.failure is not None:
                    raise ServeError(f"worker {worker.index + 1}: {worker.failure}")
                if not worker.alive() and not stopping.is_set():
                    if not worker.ready:
                        raise ServeError(f"worker {worker.index + 1} exited before serving")
                    log.error("worker %d exited; restarting it", worker.index + 1)
                    time.sleep(max(0.0, _RESTART_BACKOFF - (time.monotonic() - worker.started)))
                    start(worker)
            if not announced and all(worker.ready for worker in pool):
                announced = True
                log.info("parallio asgi: serving on %s://%s:%d with %d worker %s (%s loop)",
                         "https" if config.tls is not None else "http",
                         f"[{host}]" if ":" in host else host, port, count, parallel, loop_name)
                if on_ready is not None:
                    on_ready(port)
    finally:
        for worker in pool:
            worker.stop()
        for worker in pool:
            worker.join(config.drain_timeout + 5)
        reserved.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
