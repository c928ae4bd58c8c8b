"""HTTP/1.1 over parallio transports: the part every HTTP server shares.

:class:`HttpProtocol` is a protocol class (one instance per connection, like
any other) that feeds the sans-I/O :class:`~parallio.http.parser.RequestParser`,
answers protocol errors itself (4xx/5xx, then a clean close), sends
``100 Continue`` when asked, keeps connections alive per HTTP/1.0 and 1.1
rules, and enforces the header (slowloris), body and idle timeouts.
Subclasses implement :meth:`HttpProtocol.handle_request`; nothing malformed
reaches them.

Timeouts cost nothing per request: each connection marks progress with a
flag, and one sweep per worker a second turns missing progress into time.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .accesslog import WorkerAccessLog
from .parser import HttpError, Limits, Request, RequestParser
from .response import CONTINUE_RESPONSE, SERVER_HEADER, simple_response

if TYPE_CHECKING:
    from ..transport import ProtocolLoop, Transport

__all__ = ["HttpProtocol", "SERVER_HEADER", "note_response"]

log = logging.getLogger("parallio.http")

# How often a worker looks for connections past their timeouts; timeouts are
# therefore enforced to within this many seconds.
_SWEEP_INTERVAL = 1.0


class HttpProtocol:
    """Base class of parallio's HTTP/1.1 servers.

    Class attributes configure every connection: ``limits`` (request sizes),
    ``header_timeout`` (seconds a client gets to send a whole request head,
    counted from its first byte; then 408 and close), ``idle_timeout``
    (seconds a kept-alive connection may wait for its next request, and a
    request body or a response may go without progress, before it is
    closed).
    """

    __slots__ = ("transport", "parser", "active", "quiet", "waiting", "served", "served_seen",
                 "access", "started", "status", "sent")

    limits: Limits = Limits()
    header_timeout: float = 10.0
    idle_timeout: float = 60.0

    def connection_made(self, transport: "Transport") -> None:
        self.transport = transport
        self.parser = RequestParser(self.limits)
        #: Input arrived (or output left) since the last sweep.
        self.active = True
        #: Seconds without progress, and seconds the current head has taken.
        self.quiet = 0.0
        self.waiting = 0.0
        #: Requests answered, and how many there were at the last sweep.
        self.served = 0
        self.served_seen = 0
        transport.loop.extension(_Timeouts).add(self)
        #: The worker's access log, or None; while it is on, a front notes
        #: the status and body bytes of each response it sends (:meth:`note`).
        self.access = access = transport.loop.extension(WorkerAccessLog).log
        if access is not None:
            access.opened()
            self.started = 0.0
            self.status = self.sent = 0

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        transport.loop.extension(_Timeouts).discard(self)
        if self.access is not None:
            self.access.closed()

    def note(self, response: bytes, body_bytes: int | None = None) -> None:
        """For the access log: ``response``, a whole response, or its head
        when ``body_bytes`` more follow, is the current request's."""
        self.status = int(response[9:12])
        self.sent = (len(response) - response.find(b"\r\n\r\n") - 4 if body_bytes is None
                     else body_bytes)

    def logged(self, transport: "Transport", request: Request | None) -> None:
        """The response to ``request`` is complete: its access log line."""
        assert self.access is not None
        self.access.record(transport.peer, request, self.status, self.sent, self.started)

    def data_received(self, transport: "Transport", data: bytes) -> None:
        self.active = True
        parser = self.parser
        try:
            parser.feed(data)
            self._serve(transport)
        except HttpError as error:
            self.refuse(transport, error.status, error.reason)

    def _serve(self, transport: "Transport") -> None:
        """Answer every complete request that is buffered, in order."""
        parser = self.parser
        next_request = parser.next_request
        access = self.access
        while (request := next_request()) is not None:
            self.served += 1
            if access is not None:
                self.started = time.time()
                self.status = self.sent = 0
            try:
                keep_alive = self.handle_request(transport, request)
            except Exception:
                keep_alive = self._failed(transport, request)
            if self.response_in_progress():
                return  # the requests behind it wait for its end
            if access is not None:
                access.record(transport.peer, request, self.status, self.sent, self.started)
            if not keep_alive or transport.closing:
                transport.close()
                return
        if parser.wants_continue:
            transport.send(CONTINUE_RESPONSE)
            parser.continue_sent()

    def response_in_progress(self) -> bool:
        """True while the last request's response is still being produced
        (a stream): requests pipelined behind it are held until it ends."""
        return False

    def _failed(self, transport: "Transport", request: Request) -> bool:
        log.exception("%s failed on %s %s", type(self).__qualname__,
                      request.method, request.target)
        transport.loop.counters.callback_errors += 1
        response = simple_response(
            500, b"Internal Server Error\n", keep_alive=False,
            extra_headers=SERVER_HEADER, request_version=request.http_version)
        transport.send(response)
        if self.access is not None:
            self.note(response)
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
            response = simple_response(status, f"{status} {reason}\n".encode(),
                                       keep_alive=False, extra_headers=SERVER_HEADER)
            transport.send(response)
            if self.access is not None:
                # No request was taken up: the line has none (nginx's "-").
                self.started = time.time()
                self.note(response)
                self.logged(transport, None)
        transport.close()

    def check_timeouts(self, elapsed: float) -> None:
        """The sweep: ``elapsed`` seconds passed since the last one."""
        transport = self.transport
        if transport.closing:
            return
        if self.active:
            self.active = False
            self.quiet = 0.0
        else:
            self.quiet += elapsed
        parser = self.parser
        if parser.head_in_progress:
            if self.served != self.served_seen:
                self.waiting = 0.0   # the head in progress is a new one
            self.waiting += elapsed
            if self.waiting > self.header_timeout:
                self.refuse(transport, 408, "Request Timeout")
        else:
            self.waiting = 0.0
            if self.quiet > self.idle_timeout:
                if parser.in_progress:
                    self.refuse(transport, 408, "Request Timeout")  # a body stalled
                else:
                    transport.close()
        self.served_seen = self.served


def note_response(transport: "Transport", response: bytes, body_bytes: int | None = None) -> None:
    """For a handler that sends its own response (and returns None): tell
    the access log its status and body size, from ``response`` (the whole
    response, or its head with ``body_bytes`` of body sent apart)."""
    protocol = transport.protocol
    if getattr(protocol, "access", None) is not None:
        protocol.note(response, body_bytes)


class _Timeouts:
    """One per worker: sweeps its HTTP connections once a second."""

    def __init__(self, loop: "ProtocolLoop") -> None:
        self.loop = loop
        self.connections: set[HttpProtocol] = set()
        self.timer: Any = None
        self.last_sweep = 0.0

    def add(self, connection: HttpProtocol) -> None:
        self.connections.add(connection)
        if self.timer is None:
            self.last_sweep = time.monotonic()
            self.timer = self.loop.call_later(_SWEEP_INTERVAL, self.sweep)

    def discard(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)

    def sweep(self) -> None:
        now = time.monotonic()
        elapsed = now - self.last_sweep
        self.last_sweep = now
        for connection in list(self.connections):
            connection.check_timeouts(elapsed)
        self.timer = (self.loop.call_later(_SWEEP_INTERVAL, self.sweep)
                      if self.connections else None)
