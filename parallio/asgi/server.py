"""One ASGI server on one event loop: :func:`serve_asgi`.

``serve_asgi`` is what a worker runs, on whatever loop it has (parallio's
own in :func:`parallio.asgi.serve`'s workers, the stdlib loop, uvloop): the
application's lifespan startup, then connections accepted on the given
listening socket until ``stop`` is set, then a graceful shutdown (stop
accepting, let in-flight responses finish within ``drain_timeout``, close
WebSockets with 1012, cut what is left) and the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import Any, Callable, Coroutine, Optional, Sequence, Union
from urllib.parse import quote

from ..http.accesslog import AccessLog
from ..http.response import PreparedHeaders, prepare_headers
from .config import ASGIApp, Config
from .http import HttpProtocol
from .lifespan import Lifespan

__all__ = ["serve_asgi", "ServerState"]

log = logging.getLogger("parallio.asgi")

# How often timeouts are checked; they hold to within this many seconds.
_SWEEP_INTERVAL = 1.0


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, app: ASGIApp, config: Config, state: dict,
                 loop: asyncio.AbstractEventLoop, worker: int = 0) -> None:
        self.app = app
        self.config = config
        self.access = (AccessLog(config.access_log, loop.call_later, worker)
                       if config.access_log is not None else None)
        self.state = state
        self.loop = loop
        self.connections: set[HttpProtocol] = set()
        self.stopping = False
        self.server_header = (prepare_headers([("Server", config.server_header)])
                              if config.server_header else PreparedHeaders(b""))
        self.raw_root_path = quote(config.root_path).encode("ascii")
        self.scheme = "https" if config.tls is not None else config.scheme
        self.server_cert = _first_certificate(config.tls.certfile) if config.tls else None
        self._all_closed: Optional[asyncio.Future[None]] = None
        self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)

    if sys.version_info >= (3, 12):
        def start_task(self, coroutine: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
            """An application task, started eagerly: its first step runs now,
            so a response that waits for nothing is written before the loop
            turns again (a scheduled callback and a loop pass fewer per
            request; the same as asyncio.eager_task_factory)."""
            return asyncio.Task(coroutine, loop=self.loop, eager_start=True)
    else:
        def start_task(self, coroutine: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
            return self.loop.create_task(coroutine)

    def protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    def connection_closed(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            try:
                connection.check_timeouts(now)
            except Exception:
                log.exception("checking the timeouts of a connection failed")
        self._sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now, busy ones once their response is
        done; after ``timeout`` seconds, cut the rest."""
        self.stopping = True
        for connection in list(self.connections):
            connection.shutdown()
        if self.connections:
            self._all_closed = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
            except asyncio.TimeoutError:
                log.warning("%d connections still busy after %ss; closing them",
                            len(self.connections), timeout)
        tasks = []
        for connection in list(self.connections):
            connection.transport.abort()
            task = connection.task()
            if task is not None and not task.done():
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._sweeper.cancel()
        if self.access is not None:
            self.access.close()


def _first_certificate(path: str) -> Optional[str]:
    """The first PEM certificate in ``path`` (the server's own)."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end_marker = "-----END CERTIFICATE-----"
    end = text.find(end_marker, begin)
    return text[begin:end + len(end_marker)] + "\n" if begin >= 0 and end >= 0 else None


async def serve_asgi(app: ASGIApp, sock: Union[socket.socket, Sequence[socket.socket]],
                     config: Config = Config(), *,
                     stop: Optional[asyncio.Event] = None,
                     ready: Optional[Callable[[], Any]] = None, worker: int = 0) -> None:
    """Serve ``app`` on the listening socket ``sock`` (or each of a
    sequence of them) until ``stop`` is set (or the task is cancelled).
    ``ready`` is called once connections are being accepted; ``worker``
    is the worker's number, for the access log.
    :class:`~parallio.asgi.lifespan.LifespanFailure` if the application's
    startup failed; nothing was accepted then."""
    loop = asyncio.get_running_loop()
    # Built before the startup, so that a wrong certificate stops the worker at once.
    context = config.tls.context() if config.tls is not None else None
    lifespan = Lifespan(app, config.lifespan)
    await lifespan.startup()
    state = ServerState(app, config, lifespan.state, loop, worker)
    servers = []
    try:
        for one in ([sock] if isinstance(sock, socket.socket) else sock):
            if context is not None:
                assert config.tls is not None
                servers.append(await loop.create_server(
                    state.protocol, sock=one, backlog=1024, ssl=context,
                    ssl_handshake_timeout=config.tls.handshake_timeout))
            else:
                servers.append(await loop.create_server(state.protocol, sock=one, backlog=1024))
    except BaseException:
        for server in servers:
            server.close()
        await lifespan.shutdown()
        raise
    try:
        if ready is not None:
            ready()
        if stop is None:
            stop = asyncio.Event()
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await state.shutdown(config.drain_timeout)
        await lifespan.shutdown()
