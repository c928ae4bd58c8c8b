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

Request bodies are buffered whole before a handler sees them, so each worker
bounds what all its connections buffer together (``body_budget``): a
request that would take more is answered 503, instead of letting many
large uploads at once take the machine's memory.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..edge import EdgeTransport
from ..supervision import concurrency_limit
from ..trust import TrustedAddresses
from .accesslog import WorkerAccessLog
from .forwarded import Forwarded, resolve
from .parser import HttpError, Limits, Request, RequestParser
from .response import CONTINUE_RESPONSE, SERVER_HEADER, simple_response

if TYPE_CHECKING:
    from ..transport import ProtocolLoop, Transport

__all__ = ["HttpProtocol", "WorkerHttp", "SERVER_HEADER", "note_response"]

log = logging.getLogger("parallio.http")

# How often a worker looks for connections past their timeouts; timeouts are
# therefore enforced to within this many seconds.
_SWEEP_INTERVAL = 1.0
#: Seconds an idle keep-alive connection stays open once the server drains.
DRAIN_GRACE = 1.0


class HttpProtocol:
    """Base class of parallio's HTTP/1.1 servers.

    Class attributes configure every connection: ``limits`` (request sizes),
    ``header_timeout`` (seconds a client gets to send a whole request head,
    counted from its first byte, to within the once-a-second sweep; then
    408 and close; not counted while output waits for the client to read
    it), ``idle_timeout``
    (seconds a kept-alive connection may wait for its next request, and a
    request body or a response may go without progress, before it is
    closed). ``forwarded_allow_ips`` are the proxies whose forwarding fields
    are believed (see :meth:`forwarded`).
    """

    __slots__ = ("transport", "parser", "active", "quiet", "waiting", "served", "served_seen",
                 "sent_seen", "charged", "worker_http", "holding", "draining", "over_limit",
                 "access", "started", "status", "sent", "_forwarded")

    limits: Limits = Limits()
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    forwarded_allow_ips: TrustedAddresses = TrustedAddresses()
    #: Bytes of unfinished requests all connections of a worker may buffer.
    body_budget: int = 256 * 1024 * 1024

    def connection_made(self, transport: "Transport") -> None:
        self.transport = transport
        self.parser = RequestParser(self.limits)
        #: Input arrived (or output left) since the last sweep.
        self.active = True
        #: Seconds without progress, and seconds the current head has taken.
        self.quiet = 0.0
        self.waiting: float | None = None
        #: Requests answered, and how many there were at the last sweep.
        self.served = 0
        self.served_seen = 0
        self._forwarded: tuple[Request, Forwarded] | None = None
        #: What the transport had sent at the last sweep.
        self.sent_seen = 0
        #: What this connection's unfinished request holds of the budget.
        self.charged = 0
        #: The last request's response is still being produced (a stream):
        #: requests pipelined behind it are held until it ends.
        self.holding = False
        self.worker_http = worker_http = transport.loop.extension(WorkerHttp)
        #: Opened while the worker served its --limit-concurrency: 503.
        self.over_limit = (worker_http.limit is not None
                           and len(worker_http.connections) >= worker_http.limit)
        #: The server is stopping (or this connection is over the worker's
        #: concurrency limit): each response closes the connection.
        self.draining = self.over_limit
        worker_http.add(self)
        #: The worker's access log, or None; while it is on, a front notes
        #: the status and body bytes of each response it sends (:meth:`note`).
        self.access = access = transport.loop.extension(WorkerAccessLog).log
        if access is not None:
            access.opened()
            self.started = 0.0
            self.status = self.sent = 0

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        self.worker_http.discard(self)
        if self.access is not None:
            self.access.closed()
        # The cached request points back here (request.origin): no cycle
        # outlives the connection.
        self._forwarded = None

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
            return
        if parser.body_in_progress or self.charged:
            self._charge(transport)

    def _charge(self, transport: "Transport") -> None:
        """Account for what the unfinished request buffers now."""
        held = self.parser.buffered if self.parser.body_in_progress else 0
        worker_http = self.worker_http
        worker_http.buffered += held - self.charged
        self.charged = held
        if held and worker_http.buffered > self.body_budget and not transport.closing:
            log.warning("refusing a request body: the worker's buffered bodies passed "
                        "%d bytes", self.body_budget)
            self.refuse(transport, 503, "Service Unavailable")

    def _serve(self, transport: "Transport") -> None:
        """Answer every complete request that is buffered, in order."""
        parser = self.parser
        next_request = parser.next_request
        counters = transport.loop.counters
        access = self.access
        while (request := next_request()) is not None:
            self.served += 1
            request.origin = self
            counters.requests += 1
            if self.draining:
                if self.over_limit:
                    self.refuse(transport, 503, "Service Unavailable")
                    return
                request.keep_alive = False  # its response says Connection: close
            if access is not None:
                self.started = time.time()
                self.status = self.sent = 0
            try:
                keep_alive = self.handle_request(transport, request)
            except Exception:
                keep_alive = self._failed(transport, request)
            if self.holding:
                return  # the requests behind it wait for its end
            if access is not None:
                access.record(transport.peer, request, self.status, self.sent, self.started)
            if not keep_alive or transport.closing:
                transport.close()
                return
            if transport.writing_paused:
                # The client is not reading: the requests it pipelined are
                # answered as it takes what was sent, not all at once into
                # memory.
                transport.when_drained(self._resume_serving)
                return
        if parser.wants_continue:
            transport.send(CONTINUE_RESPONSE)
            parser.continue_sent()
        elif self.draining and not parser.in_progress:
            transport.close()  # a response that was running when the drain began ended

    def _resume_serving(self) -> None:
        transport = self.transport
        if transport.closing:
            return
        try:
            self._serve(transport)
        except HttpError as error:
            self.refuse(transport, error.status, error.reason)

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

    def connection_draining(self, transport: "Transport") -> None:
        """The server is stopping. A request in progress is answered, with
        ``Connection: close``; an idle connection stays open for
        :data:`DRAIN_GRACE` seconds, so that a request already on its way
        is answered (with ``Connection: close``) rather than met by a closed
        socket, and is closed then if none came."""
        self.draining = True
        if not self._busy():
            transport.loop.call_later(DRAIN_GRACE, self._close_if_idle, self.served)

    def _busy(self) -> bool:
        return self.parser.in_progress or self.holding

    def _close_if_idle(self, served: int) -> None:
        transport = self.transport
        if not transport.closing and self.served == served and not self._busy():
            transport.close()

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
        # Whatever the unfinished request buffered is abandoned now, not
        # when the (lingering) close ends.
        self.worker_http.buffered -= self.charged
        self.charged = 0
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
        if transport.closed:
            return
        if transport.write_buffer_size:
            self._note_progress(elapsed)
            self._check_output_progress()
            return
        if transport.closing:
            return
        self._note_progress(elapsed)
        parser = self.parser
        if parser.head_in_progress:
            if self.waiting is None or self.served != self.served_seen:
                # A head begun since the last sweep: its clock starts now,
                # so a head cut between two reads at the moment of a sweep
                # is not charged the whole interval.
                self.waiting = 0.0
            else:
                self.waiting += elapsed
                if self.waiting > self.header_timeout:
                    self.refuse(transport, 408, "Request Timeout")
        else:
            self.waiting = None
            if self.quiet > self.idle_timeout:
                if parser.in_progress:
                    self.refuse(transport, 408, "Request Timeout")  # a body stalled
                else:
                    transport.close()
        self.served_seen = self.served

    def _check_output_progress(self) -> None:
        """Output is waiting, so the client is behind on reading (and past
        the high water mark it is not read from): no head clock runs, as a
        head cut by that pause is not the client's delay. Progress is the
        client taking output; a whole idle timeout without any cuts it, as
        a graceful close would wait forever."""
        if self.quiet > self.idle_timeout:
            log.info("closing a connection whose client stopped reading")
            self.transport.abort()

    def _note_progress(self, elapsed: float) -> None:
        """Input that arrived or output the client took since the last
        sweep resets the quiet time; else it grows by ``elapsed``."""
        sent = self.transport.bytes_sent
        if self.active or sent != self.sent_seen:
            self.active = False
            self.sent_seen = sent
            self.quiet = 0.0
        else:
            self.quiet += elapsed


def connection_scheme(transport: "Transport") -> str:
    """"https" on a TLS connection, else "http"."""
    return "https" if isinstance(transport, EdgeTransport) and transport.is_tls else "http"


class WorkerHttp:
    """One per worker: sweeps its HTTP connections once a second, and counts
    what their unfinished requests buffer."""

    def __init__(self, loop: "ProtocolLoop") -> None:
        self.loop = loop
        self.connections: set[HttpProtocol] = set()
        #: Connections served at once before new ones get 503 (None: no limit).
        self.limit = concurrency_limit(loop)
        self.timer: Any = None
        self.last_sweep = 0.0
        #: Bytes of unfinished requests buffered by all connections.
        self.buffered = 0

    def add(self, connection: HttpProtocol) -> None:
        self.connections.add(connection)
        if self.timer is None:
            self.last_sweep = time.monotonic()
            self.timer = self.loop.call_later(_SWEEP_INTERVAL, self.sweep)

    def discard(self, connection: HttpProtocol) -> None:
        self.connections.discard(connection)
        self.buffered -= connection.charged
        connection.charged = 0

    def sweep(self) -> None:
        now = time.monotonic()
        elapsed = now - self.last_sweep
        self.last_sweep = now
        for connection in list(self.connections):
            connection.check_timeouts(elapsed)
        self.timer = (self.loop.call_later(_SWEEP_INTERVAL, self.sweep)
                      if self.connections else None)


def note_response(transport: "Transport", response: bytes, body_bytes: int | None = None) -> None:
    """For a handler that sends its own response (and returns None): tell
    the access log its status and body size, from ``response`` (the whole
    response, or its head with ``body_bytes`` of body sent apart)."""
    protocol = transport.protocol
    if getattr(protocol, "access", None) is not None:
        protocol.note(response, body_bytes)
