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

from ..edge import EdgeTransport
from ..trust import TrustedAddresses
from .forwarded import Forwarded, resolve
from .parser import HttpError, Limits, Request, RequestParser
from .response import CONTINUE_RESPONSE, SERVER_HEADER, simple_response

if TYPE_CHECKING:
    from ..transport import ProtocolLoop, Transport

__all__ = ["HttpProtocol", "SERVER_HEADER"]

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
    closed). ``forwarded_allow_ips`` are the proxies whose forwarding fields
    are believed (see :meth:`forwarded`).
    """

    __slots__ = ("transport", "parser", "active", "quiet", "waiting", "served", "served_seen",
                 "_forwarded")

    limits: Limits = Limits()
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    forwarded_allow_ips: TrustedAddresses = TrustedAddresses()

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
        self._forwarded: tuple[Request, Forwarded] | None = None
        transport.loop.extension(_Timeouts).add(self)

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        transport.loop.extension(_Timeouts).discard(self)

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
        while (request := next_request()) is not None:
            self.served += 1
            request.origin = self
            try:
                keep_alive = self.handle_request(transport, request)
            except Exception:
                keep_alive = self._failed(transport, request)
            if self.response_in_progress():
                return  # the requests behind it wait for its end
            if not keep_alive or transport.closing:
                transport.close()
                return
        if parser.wants_continue:
            transport.send(CONTINUE_RESPONSE)
            parser.continue_sent()

    def forwarded(self, request: Request) -> Forwarded:
        """Where ``request`` came from as the application sees it (what
        ``request.client``, ``.scheme`` and ``.host`` say): the peer and the
        connection's scheme, or what trusted proxies' fields say."""
        cached = self._forwarded
        if cached is not None and cached[0] is request:
            return cached[1]
        transport = self.transport
        result = resolve(request.headers, transport.peer, connection_scheme(transport),
                         self.forwarded_allow_ips)
        self._forwarded = (request, result)
        return result

    def response_in_progress(self) -> bool:
        """True while the last request's response is still being produced
        (a stream): requests pipelined behind it are held until it ends."""
        return False

    def _failed(self, transport: "Transport", request: Request) -> bool:
        log.exception("%s failed on %s %s", type(self).__qualname__,
                      request.method, request.target)
        transport.loop.counters.callback_errors += 1
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


def connection_scheme(transport: "Transport") -> str:
    """"https" on a TLS connection, else "http"."""
    return "https" if isinstance(transport, EdgeTransport) and transport.is_tls else "http"


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
