"""HTTP/1.1 over parallio transports: the part every HTTP server shares.

:class:`HttpProtocol` is a protocol class (one instance per connection, like
any other) that feeds the sans-I/O :class:`~parallio.http.parser.RequestParser`,
answers protocol errors itself (4xx/5xx, then a clean close), sends
``100 Continue`` when asked, keeps connections alive per HTTP/1.0 and 1.1
rules, and enforces the header (slowloris) and idle timeouts. Subclasses
implement :meth:`HttpProtocol.handle_request`; nothing malformed reaches them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import _context
from .parser import HttpError, Limits, Request, RequestParser
from .response import CONTINUE_RESPONSE, prepare_headers, simple_response

if TYPE_CHECKING:
    from ..transport import Transport
    from ..worker import Worker

log = logging.getLogger("parallio.http")

SERVER_HEADER = prepare_headers([("Server", "parallio")])
# How often a worker looks for connections past their timeouts; timeouts are
# therefore enforced to within this many seconds.
_SWEEP_INTERVAL = 1.0


class HttpProtocol:
    """Base class of parallio's HTTP/1.1 servers.

    Class attributes configure every connection: ``limits`` (request sizes),
    ``header_timeout`` (seconds a client gets to send a whole request head,
    counted from its first byte; then 408 and close), ``idle_timeout``
    (seconds a kept-alive connection may wait for its next request).
    """

    limits: Limits = Limits()
    header_timeout: float = 10.0
    idle_timeout: float = 60.0

    def connection_made(self, transport: "Transport") -> None:
        self.transport = transport
        self.parser = RequestParser(self.limits)
        self.last_activity = time.monotonic()
        self.request_started: float | None = None
        _timeouts_of_current_worker().add(self)

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        _timeouts_of_current_worker().discard(self)

    def data_received(self, transport: "Transport", data: bytes) -> None:
        self.last_activity = now = time.monotonic()
        try:
            self.parser.feed(data)
            self._serve(transport, now)
        except HttpError as error:
            self.refuse(transport, error.status, error.reason)

    def _serve(self, transport: "Transport", now: float) -> None:
        """Answer every complete request that is buffered, in order."""
        parser = self.parser
        next_request = parser.next_request
        while (request := next_request()) is not None:
            self.request_started = None
            keep_alive = self._dispatch(transport, request)
            if self.response_in_progress():
                return  # the requests behind it wait for its end
            if not keep_alive or transport.closing:
                transport.close()
                return
        if parser.wants_continue:
            transport.send(CONTINUE_RESPONSE)
            parser.continue_sent()
        if self.request_started is None and parser.in_progress:
            self.request_started = now

    def response_in_progress(self) -> bool:
        """True while the last request's response is still being produced
        (a stream): requests pipelined behind it are held until it ends."""
        return False

    def _dispatch(self, transport: "Transport", request: Request) -> bool:
        try:
            return self.handle_request(transport, request)
        except Exception:
            log.exception("%s failed on %s %s", type(self).__qualname__,
                          request.method, request.target)
            transport.worker.callback_errors += 1
            transport.send(simple_response(
                500, b"Internal Server Error\n", keep_alive=False,
                extra_headers=SERVER_HEADER, request_version=request.http_version))
            return False

    def handle_request(self, transport: "Transport", request: Request) -> bool:
        """Answer ``request`` by sending exactly one response on
        ``transport`` (``send``/``sendfile``); return whether the connection
        may stay open (``request.keep_alive`` unless the response said
        ``Connection: close``). An exception becomes a 500 and a close."""
        raise NotImplementedError

    def refuse(self, transport: "Transport", status: int, reason: str) -> None:
        """Answer a request that cannot be served with ``status``, and close."""
        if not transport.closing:
            transport.send(simple_response(
                status, f"{status} {reason}\n".encode(), keep_alive=False,
                extra_headers=SERVER_HEADER))
        transport.close()

    def check_timeouts(self, now: float) -> None:
        if self.transport.closing:
            return
        started = self.request_started
        if started is not None:
            if now - started > self.header_timeout:
                self.refuse(self.transport, 408, "Request Timeout")
        elif now - self.last_activity > self.idle_timeout and not self.parser.in_progress:
            self.transport.close()


class _Timeouts:
    """One per worker: sweeps its HTTP connections once a second."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.connections: set[HttpProtocol] = set()
        self.timer: Any = None

    def add(self, connection: HttpProtocol) -> None:
        self.connections.add(connection)
        if self.timer is None:
            self.timer = self.worker.call_later(_SWEEP_INTERVAL, self.sweep)

    def discard(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)

    def sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        self.timer = (self.worker.call_later(_SWEEP_INTERVAL, self.sweep)
                      if self.connections else None)


def _timeouts_of_current_worker() -> _Timeouts:
    worker = _context.current_worker()
    timeouts = worker.state.get(__name__)
    if timeouts is None:
        timeouts = worker.state[__name__] = _Timeouts(worker)
    return timeouts
