"""The ASGI server on every core: :func:`serve`.

Each worker of :func:`parallio.loop.run_on_all_cores` -- an isolated
subinterpreter where the application's modules load in one (Starlette,
Django), else a process (FastAPI: pydantic-core refuses subinterpreters),
or a thread on a free-threaded build; the runtime logs which and why --
runs :func:`~parallio.asgi.serve_asgi` on its own parallio event loop, over
its own engine, with its own ``SO_REUSEPORT`` listening socket. One
lifespan per worker, run before that worker accepts; a failing startup in
any worker stops them all with the application's message; SIGINT/SIGTERM
cancel every worker's server, which then drains.
"""

from __future__ import annotations

import itertools
import logging
import socket
from typing import Callable, Optional, Sequence, Union

from .._listen import interfaces, open_listener, release, tcp_server
from .._spec import Endpoint
from ..loop import run_on_all_cores
from ..runtime import cpu_count
from ..services.mainthread import call_from_main_thread
from ..worker import current_worker
from .config import AppLoadError, ASGIApp, Config, load_app
from .lifespan import LifespanFailure
from .server import serve_asgi

__all__ = ["serve", "ServeError"]

log = logging.getLogger("parallio.asgi")

# Seconds a worker gets past the server's own drain for its lifespan
# shutdown, before the runtime stops its loop.
_SHUTDOWN_GRACE = 5.0


class ServeError(Exception):
    """The server could not start or a worker's startup failed."""


class _Startup:
    """The main thread's view of one serve(): which workers accept."""

    def __init__(self, endpoints: Sequence[Endpoint], workers: int,
                 on_ready: Optional[Callable[[int], None]], tls: bool) -> None:
        self.addresses = ", ".join(
            f"{_url(endpoint, tls)} ({interfaces(endpoint)})" for endpoint in endpoints)
        self.port = endpoints[0].port
        self.workers = workers
        self.on_ready = on_ready
        self.serving: set[int] = set()
        self.announced = False


#: The serve() calls of this process (the main thread's), by id.
_startups: dict[int, _Startup] = {}
_startup_ids = itertools.count(1)


def _worker_serving(startup_id: int, worker: int) -> None:
    """On the main thread: ``worker`` accepts connections now."""
    startup = _startups.get(startup_id)
    if startup is None:
        return
    startup.serving.add(worker)
    if not startup.announced and len(startup.serving) == startup.workers:
        startup.announced = True
        log.info("parallio asgi: serving on %s with %d worker(s)", startup.addresses,
                 startup.workers)
        if startup.on_ready is not None:
            startup.on_ready(startup.port)


def _url(endpoint: Endpoint, tls: bool) -> str:
    scheme = "https" if tls else "http"
    return (f"{scheme}+unix://{endpoint.address}" if endpoint.family == socket.AF_UNIX
            else f"{scheme}://{endpoint.where}")


async def _serve_in_worker(app: Union[str, ASGIApp], endpoints: list[Endpoint], config: Config,
                           startup_id: int) -> None:
    """What each worker runs: the application on its own listening sockets
    (in the port's SO_REUSEPORT group, or duplicates of a shared one) and
    its own loop."""
    application = load_app(app) if isinstance(app, str) else app
    socks = []
    try:
        for endpoint in endpoints:
            socks.append(open_listener(endpoint))
        worker = current_worker()
        seq_id = worker.seq_id if worker is not None else 0

        def serving() -> None:
            call_from_main_thread(_worker_serving, (startup_id, seq_id))

        await serve_asgi(application, socks, config, ready=serving, worker=seq_id)
    finally:
        for sock in socks:
            sock.close()


def serve(app: Union[str, ASGIApp], host: str = "127.0.0.1", port: int = 8000, *,
          workers: Optional[int] = None, parallel: str = "auto", io: str = "auto",
          config: Config = Config(), on_ready: Optional[Callable[[int], None]] = None,
          endpoints: Optional[list[Endpoint]] = None) -> None:
    """Serve an ASGI application on ``workers`` parallio event loops until
    SIGINT or SIGTERM. ``app`` is ``"module:attribute"`` (what workers in
    other interpreters and processes import) or the application object
    (threads only). It listens on ``endpoints`` (``--bind``'s, made by
    :mod:`parallio._listen`; this call releases them) or else on
    ``host``:``port``. ``on_ready`` gets the (first) port once every worker
    accepts. ServeError if a worker's startup fails (its lifespan's
    message) or the application cannot be loaded; OSError naming the
    address if it cannot listen there."""
    if not isinstance(app, str):
        if parallel == "auto":
            parallel = "threads"
            log.info("parallio asgi: the threads host, because the application is an object, "
                     "which only threads share")
        elif parallel != "threads":
            raise ServeError(f"--parallel {parallel} needs the application as MODULE:ATTRIBUTE")
    # Made before any worker starts: an address in use fails here, once. A
    # TCP port stays held by a placeholder, so that a worker restarted later
    # gets the same one even if it was 0.
    if endpoints is None:
        endpoints = [tcp_server(host, port)]
    count = workers or cpu_count()
    startup_id = next(_startup_ids)
    _startups[startup_id] = _Startup(endpoints, count, on_ready, config.tls is not None)
    try:
        run_on_all_cores(_serve_in_worker, workers=count, parallel=parallel, io=io,
                         args=(app, endpoints, config, startup_id),
                         imports=[app] if isinstance(app, str) else [],
                         drain_timeout=config.drain_timeout + _SHUTDOWN_GRACE,
                         pass_fds=[endpoint.fd for endpoint in endpoints
                                   if endpoint.fd is not None])
    except (LifespanFailure, AppLoadError) as error:
        raise ServeError(str(error)) from None
    finally:
        _startups.pop(startup_id, None)
        for endpoint in endpoints:
            release(endpoint)
