"""HTTP/1.1 for ASGI applications, as an :class:`asyncio.Protocol`.

One :class:`HttpProtocol` per connection feeds parallio's sans-I/O request
parser and runs one ASGI ``http`` cycle per request, in order: pipelined
requests wait (and the socket stops being read) until the response before
them is complete. A WebSocket upgrade hands the connection to
:class:`~parallio.asgi.websocket.WebSocketSession`.

What the application gets:

* The ``http`` scope of ASGI spec 2.4: ``path`` and ``raw_path`` behind the
  configured ``root_path``, ``query_string`` as received, ``headers`` with
  lowercased names as bytes in arrival order, ``client``/``server``,
  ``state`` (a shallow copy of the lifespan state), and the
  ``http.response.pathsend`` and ``http.response.trailers`` extensions.
* The body as ``http.request`` events of at most ``body_chunk_size`` bytes
  with ``more_body``; ``100 Continue`` is sent for ``Expect: 100-continue``.
  The parser delivers a request once its body is complete, so today the
  pieces come from a buffered body (bounded by ``Limits.max_body``).
* ``http.disconnect`` from ``receive()`` once the response is complete or
  the client has gone; ``send()`` on a connection the client closed raises
  :class:`ClientDisconnected` (an ``OSError``, spec 2.4).

What the server enforces on the response:

* Status and header names and values are validated before anything is
  written (CR, LF, NUL and other controls in a value are refused), so a
  bad header is a 500, never a split response. ``Transfer-Encoding`` from
  the application is ignored; ``Connection: close`` is honoured.
* The head goes out with the first body piece (so an error before it can
  still become a 500). Without ``Content-Length`` the body is chunked for
  HTTP/1.1 and delimited by closing the connection for HTTP/1.0. A body
  longer or shorter than its ``Content-Length`` is an error: a 500 if
  nothing was written yet, else the connection is cut. HEAD responses, 204
  and 304 carry no body.
* Trailers (``"trailers": True``) are sent after a chunked body when the
  client said ``TE: trailers``, and dropped otherwise (the extension's rule).
* An application that raises before its response started gets a 500 and
  the connection is closed; after, the connection is cut. Either way the
  server carries on. ``request_timeout`` cancels an application that runs
  too long: a 503 if nothing was sent, else the connection is cut.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any, Optional

from ..http.forwarded import FORWARDING_FIELDS, resolve
from ..http.parser import HttpError, Request, RequestParser
from ..http.response import (
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    PreparedHeaders,
    chunk_header,
    last_chunk,
    prepare_headers,
    simple_response,
)
from ..http.websocket import HandshakeError, is_upgrade_request, parse_upgrade_request
from .shared import ClientDisconnected, ResponseHeaders, Server, Wakeup
from .websocket import WebSocketSession

__all__ = ["HttpProtocol", "HttpCycle"]

log = logging.getLogger("parallio.asgi")

_HTTP_VERSIONS = {(1, 1): "1.1", (1, 0): "1.0"}
_NO_BODY_STATUSES = frozenset((204, 304))
_SENDFILE_CHUNK = 256 * 1024


# Cycle states.
_START = 0  # waiting for http.response.start
_BODY = 1  # head known (perhaps not written yet), body in progress
_TRAILERS = 2  # body done, waiting for http.response.trailers
_DONE = 3  # response complete


class HttpCycle:
    """One request and its response: the ``receive`` and ``send`` an
    application gets for it."""

    __slots__ = ("protocol", "request", "scope", "task", "state", "head", "status", "chunked",
                 "remaining", "keep_alive", "head_only", "wrote", "trailers_promised",
                 "trailers_sent", "trailer_pairs", "disconnected", "timed_out", "started_at",
                 "_body_pos", "wakeup", "sent", "logged")

    def __init__(self, protocol: "HttpProtocol", request: Request, scope: dict) -> None:
        self.protocol = protocol
        self.request = request
        self.scope = scope
        self.task: Optional[asyncio.Task[None]] = None
        self.state = _START
        self.head: Optional[bytes] = None  # rendered, not written yet
        self.status = 0
        self.chunked = False
        self.remaining: Optional[int] = None  # Content-Length bytes still due
        self.keep_alive = request.keep_alive
        self.head_only = request.method == "HEAD"
        self.wrote = False
        self.trailers_promised = False  # the application will send http.response.trailers
        self.trailers_sent = False  # ... and they go on the wire
        self.trailer_pairs: list = []
        self.disconnected = False
        self.timed_out = False
        self.started_at = time.monotonic()
        self._body_pos = -1  # -1: no http.request event delivered yet
        self.wakeup = Wakeup()  # for a receive() waiting for the response's end
        self.sent = 0  # body bytes written, for the access log
        self.logged = False

    # -- the application's side ----------------------------------------------------

    async def run(self, app: Any) -> None:
        request = self.request
        try:
            result = await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass  # raised by send() to an application that did not catch it
        except asyncio.CancelledError:
            if not self.timed_out:
                raise
            log.warning("ASGI application cut off after %ss on %s %s",
                        self.protocol.server.config.request_timeout, request.method, request.target)
            self._fail(503, b"Service Unavailable")
        except Exception as error:
            log.error("ASGI application raised on %s %s", request.method, request.target,
                      exc_info=error)
            self._fail(500, b"Internal Server Error")
        else:
            if result is not None:
                log.warning("ASGI application returned %r instead of None", result)
            if self.state != _DONE and not self.disconnected:
                log.error("ASGI application returned without %s the response to %s %s",
                          "starting" if self.state == _START else "completing",
                          request.method, request.target)
                self._fail(500, b"Internal Server Error")
        finally:
            self.wakeup.set()
            self.protocol.cycle_ended(self)

    def _fail(self, status: int, body: bytes) -> None:
        """End a response that cannot be completed: a whole error response
        if nothing of it was written, else cut the connection (the only way
        to tell the client the response is broken)."""
        self.state = _DONE
        self.keep_alive = False
        if self.disconnected:
            return
        protocol = self.protocol
        if self.wrote:
            self.log()
            protocol.transport.abort()
            return
        protocol.transport.write(simple_response(
            status, body, keep_alive=False, extra_headers=protocol.server.server_header,
            request_version=self.request.http_version, head_only=self.head_only))
        self.wrote = True
        self.status = status
        self.sent = 0 if self.head_only else len(body)
        self.log()

    def log(self) -> None:
        """The response is over: its access log line, once."""
        access = self.protocol.server.access
        if access is None or self.logged:
            return
        self.logged = True
        start = time.time() - (time.monotonic() - self.started_at)
        access.record(self.protocol.peer, self.request, self.status, self.sent, start)

    async def receive(self) -> dict:
        body = self.request.body
        pos = self._body_pos
        if pos < len(body) and not self.disconnected and self.state != _DONE:
            start = max(pos, 0)
            end = start + self.protocol.server.config.body_chunk_size
            piece = body if start == 0 and end >= len(body) else body[start:end]
            self._body_pos = start + len(piece)
            return {"type": "http.request", "body": piece, "more_body": self._body_pos < len(body)}
        while self.state != _DONE and not self.disconnected and not self.protocol.eof:
            await self.wakeup.wait(self.protocol.server.loop)
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        # is_closing(): the transport may have failed a write already, before
        # connection_lost (which comes on a later loop turn) tells us.
        if self.disconnected or self.protocol.transport.is_closing():
            raise ClientDisconnected("the client closed the connection")
        kind = message["type"]
        state = self.state
        if state == _BODY:
            if kind == "http.response.body":
                body = message.get("body", b"")
                if type(body) is not bytes:
                    if not isinstance(body, (bytearray, memoryview)):
                        raise TypeError(f"http.response.body 'body' is {type(body).__name__}, "
                                        "not bytes")
                    body = bytes(body)
                self._write_body(body, message.get("more_body", False))
            elif kind == "http.response.pathsend":
                await self._pathsend(message["path"])
            else:
                raise RuntimeError(f"expected ASGI message 'http.response.body', not {kind!r}")
            if self.protocol.write_paused and self.state != _DONE:
                await self.protocol.drain()
        elif state == _START:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', not {kind!r}")
            self._start(message)
        elif state == _TRAILERS:
            if kind != "http.response.trailers":
                raise RuntimeError(f"expected ASGI message 'http.response.trailers', not {kind!r}")
            self._trailers(message)
        else:
            raise RuntimeError(f"ASGI message {kind!r} after the response was complete")

    # -- writing the response ----------------------------------------------------------

    def _start(self, message: Any) -> None:
        status = message["status"]
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"invalid response status {status!r}")
        headers = ResponseHeaders(message.get("headers", ()))
        request = self.request
        protocol = self.protocol
        if headers.close or protocol.server.stopping:
            self.keep_alive = False
        length = headers.content_length
        framing: dict[str, Any] = {}
        if status in _NO_BODY_STATUSES:
            if length is not None and status == 304:
                # A 304 may state the length of what it stands for (RFC 9110
                # §8.6): a plain header here, not framing.
                headers.pairs.append((b"content-length", b"%d" % length))
            length = None
        elif length is not None:
            framing["content_length"] = length
            self.remaining = 0 if self.head_only else length
        elif self.head_only:
            pass  # a HEAD response without a length states none
        elif request.http_version >= (1, 1):
            framing["chunked"] = self.chunked = True
        else:
            self.keep_alive = False  # HTTP/1.0: the close ends the body
        self.trailers_promised = bool(message.get("trailers", False))
        self.trailers_sent = (self.trailers_promised and self.chunked
                              and "trailers" in _tokens(request.headers.get_all("te")))
        self.head = headers.render(status, protocol.server.server_header,
                                   keep_alive=self.keep_alive,
                                   request_version=request.http_version, **framing)
        self.status = status
        self.state = _BODY

    def _write_body(self, body: bytes, more_body: bool) -> None:
        parts = []
        if self.head is not None:
            parts.append(self.head)
            self.head = None
        if body and not self.head_only:
            if self.status in _NO_BODY_STATUSES:
                raise RuntimeError(f"a {self.status} response has no body")
            self.sent += len(body)
            if self.remaining is not None:
                self.remaining -= len(body)
                if self.remaining < 0:
                    raise RuntimeError("response body longer than its Content-Length")
                parts.append(body)
            elif self.chunked:
                parts += (chunk_header(len(body)), body, b"\r\n")
            else:
                parts.append(body)
        if not more_body:
            self._end_body(parts)
        if parts:
            self.protocol.transport.write(b"".join(parts) if len(parts) > 1 else parts[0])
            self.wrote = True
        if self.state == _DONE:
            self.protocol.response_complete(self)

    def _end_body(self, parts: list) -> None:
        if self.remaining:
            raise RuntimeError(f"response body {self.remaining} bytes shorter than its "
                               "Content-Length")
        if self.trailers_promised:
            self.state = _TRAILERS
        else:
            if self.chunked:
                parts.append(LAST_CHUNK)
            self.state = _DONE

    def _trailers(self, message: Any) -> None:
        self.trailer_pairs += ResponseHeaders(message.get("headers", ())).pairs
        if message.get("more_trailers", False):
            return
        if self.chunked:
            end = last_chunk(self.trailer_pairs if self.trailers_sent else ())
            self.protocol.transport.write(end)
            self.wrote = True
        self.state = _DONE
        self.protocol.response_complete(self)

    async def _pathsend(self, path: Any) -> None:
        """http.response.pathsend: the file as the body, sent by the kernel
        where the loop can (``loop.sendfile``)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"http.response.pathsend 'path' must be a str, not {type(path).__name__}")
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if self.remaining is not None and size != self.remaining and not self.head_only:
                raise RuntimeError(f"{path}: {size} bytes, but Content-Length said "
                                   f"{self.remaining}")
            sends_file = size and not self.head_only and self.status not in _NO_BODY_STATUSES
            prefix = self.head or b""
            self.head = None
            if sends_file and self.chunked:
                prefix += chunk_header(size)
            if prefix:
                self.protocol.transport.write(prefix)
                self.wrote = True
            if sends_file:
                await self.protocol.send_file(file, size)
                self.wrote = True
                self.sent += size
                if self.remaining is not None:
                    self.remaining = 0
        parts = [b"\r\n"] if sends_file and self.chunked else []
        self._end_body(parts)
        if parts:
            self.protocol.transport.write(b"".join(parts))
        if self.state == _DONE:
            self.protocol.response_complete(self)

    # -- the connection's side ------------------------------------------------------------

    def disconnect(self) -> None:
        self.disconnected = True
        self.wakeup.set()


def _tokens(values: list[str]) -> list[str]:
    return [token.strip(" \t").lower() for value in values for token in value.split(",")]


def _address(value: Any) -> Optional[tuple]:
    """A transport's peername/sockname as the scope wants it: (host, port)
    for IP, (path, None) for a Unix socket, None when unknown."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (value[0], value[1])
    if isinstance(value, str) and value:
        return (value, None)
    return None


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _tls_extension(ssl_object: Any, server_cert: Optional[str]) -> dict[str, Any]:
    """The ASGI TLS extension of a connection (asgiref's "tls" extension)."""
    import ssl

    from ..tls import rfc4514_name

    cert = ssl_object.getpeercert()
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    suite = None
    if cipher is not None:
        for known in ssl_object.context.get_ciphers():
            if known["name"] == cipher[0]:
                suite = known["id"] & 0xFFFF
                break
    return {
        "server_cert": server_cert,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc4514_name(cert["subject"]) if cert else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": suite,
    }


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection serving an ASGI application."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = RequestParser(server.config.limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.local: Optional[tuple] = None
        self.peer: Optional[tuple] = None
        self.socket_peer: Any = None  # as getpeername() gives it
        self.tls: Optional[dict[str, Any]] = None  # the scope's "tls" extension
        self.pending: deque[Request] = deque()  # complete requests not yet started
        self.cycle: Optional[HttpCycle] = None  # the request whose response is in progress
        self.websocket: Optional["WebSocketSession"] = None
        self.upgrade_queued = False  # an upgrade request is in `pending`: parse no further
        self.refusal: Optional[HttpError] = None  # to answer once the response in progress ends
        self.closed = False
        self.eof = False
        self.reading_paused = False
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.last_activity = time.monotonic()
        self.head_started: Optional[float] = None  # when the unfinished request began arriving
        self._starting = False  # inside _next(), starting an application task

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = _address(transport.get_extra_info("sockname"))
        self.socket_peer = transport.get_extra_info("peername")
        self.peer = _address(self.socket_peer)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = _tls_extension(ssl_object, self.server.server_cert)
        self.server.connections.add(self)
        if self.server.access is not None:
            self.server.access.opened()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self.server.connection_closed(self)
        if self.server.access is not None:
            self.server.access.closed()
        if self.cycle is not None:
            self.cycle.disconnect()
        if self.websocket is not None:
            self.websocket.connection_lost()
        self._release_drain_waiters()

    def eof_received(self) -> Optional[bool]:
        if self.websocket is not None:
            return self.websocket.eof_received()
        # The client sends no more: the application hears http.disconnect
        # (a long poll ends), but the connection stays open for writing
        # while there is a response to finish, for a client that only
        # half-closed.
        self.eof = True
        if self.cycle is not None:
            self.cycle.wakeup.set()
        return self.cycle is not None or bool(self.pending)

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.data_received(data)
            return
        self.last_activity = time.monotonic()
        try:
            self.parser.feed(data)
        except HttpError:
            return  # the parser refused earlier input: that answer is owed already
        self._parse()
        if self.cycle is None:
            self._next()
        elif self.pending and not self.reading_paused:
            # A response is in progress and whole requests wait behind it:
            # read no more until they are served (bounds a pipelining client).
            self.reading_paused = True
            self.transport.pause_reading()

    def _parse(self) -> None:
        """Queue the requests complete in what was received; none after an
        upgrade request (what follows it may not be HTTP)."""
        parser = self.parser
        try:
            while not self.upgrade_queued:
                request = parser.next_request()
                if request is None:
                    break
                self.head_started = None
                self.pending.append(request)
                if "upgrade" in request.headers and request.method == "GET":
                    self.upgrade_queued = True
        except HttpError as error:
            self.refuse(error)  # after the requests before it, if any
        if self.head_started is None and parser.in_progress:
            self.head_started = self.last_activity

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain_waiters()

    # -- serving requests in order --------------------------------------------------------

    def _next(self) -> None:
        """Start the next request's cycle, or answer what is owed."""
        while self.cycle is None and not self.transport.is_closing():
            if not self.pending:
                if self.refusal is not None:
                    self.refuse(self.refusal)
                elif self.eof or self.parser.finished:
                    self.transport.close()
                elif self.parser.wants_continue:
                    self.transport.write(CONTINUE_RESPONSE)
                    self.parser.continue_sent()
                if self.reading_paused and not self.closed:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return
            request = self.pending.popleft()
            if self.upgrade_queued and not self.pending:
                self.upgrade_queued = False
                if self._upgrade(request):
                    return
                self._parse()  # not a WebSocket: what follows is HTTP after all
            cycle = self.cycle = HttpCycle(self, request, self._scope(request))
            # The task may start eagerly and complete the response before
            # this returns: response_complete() then leaves the next request
            # to this loop rather than recursing.
            self._starting = True
            try:
                cycle.task = self.server.start_task(cycle.run(self.server.app))
            finally:
                self._starting = False

    def response_complete(self, cycle: HttpCycle) -> None:
        """The response to ``cycle`` is all written: the connection serves
        the next request (its application may still be running)."""
        if self.cycle is not cycle:
            return
        self.cycle = None
        cycle.log()
        self.last_activity = time.monotonic()
        if not cycle.keep_alive:
            self.pending.clear()
            self.transport.close()
            return
        if not self._starting:
            self._next()

    def cycle_ended(self, cycle: HttpCycle) -> None:
        """``cycle``'s application returned (or raised): if its response is
        still open, the connection cannot be reused."""
        cycle.log()  # a response cut short (a client gone, say) is logged too
        if self.cycle is cycle:
            if not self.closed:
                self.transport.close()
            self.cycle = None

    def _scope(self, request: Request) -> dict:
        server = self.server
        headers = []
        forwarding = None
        for name, value in request.headers:
            if name in FORWARDING_FIELDS:
                forwarding = forwarding or []
                forwarding.append((name, value))
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        client, scheme = self.peer, server.scheme
        if forwarding:
            # A trusted proxy's word on who the client is (Forwarded,
            # X-Forwarded-For/-Proto), as uvicorn's --forwarded-allow-ips.
            origin = resolve(forwarding, self.socket_peer, scheme,
                             server.config.forwarded_allow_ips)  # type: ignore[arg-type]
            if origin.client is not self.socket_peer:
                client = _address(origin.client)
            scheme = origin.scheme
        extensions: dict[str, Any] = {"http.response.pathsend": {}, "http.response.trailers": {}}
        if self.tls is not None:
            extensions["tls"] = self.tls
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": _HTTP_VERSIONS[request.http_version],
            "server": self.local,
            "client": client,
            "scheme": scheme,
            "method": request.method,
            "root_path": server.config.root_path,
            "path": server.config.root_path + request.path,
            "raw_path": server.raw_root_path + request.raw_path.encode("latin-1"),
            "query_string": request.query.encode("latin-1"),
            "headers": headers,
            "state": server.state.copy(),
            "extensions": extensions,
        }

    def _upgrade(self, request: Request) -> bool:
        """Hand the connection to a WebSocket session if ``request`` asks
        for one; False to serve it as plain HTTP (another protocol's
        Upgrade is ignored, as RFC 9110 §7.8 allows)."""
        if not is_upgrade_request(request.headers):
            return False
        try:
            upgrade = parse_upgrade_request(request.method, request.http_version, request.headers)
        except HandshakeError as error:
            self.transport.write(simple_response(
                error.status, f"{error.reason}\n".encode(), keep_alive=False,
                extra_headers=PreparedHeaders(self.server.server_header
                                              + prepare_headers(error.headers)),
                request_version=request.http_version))
            self.transport.close()
            return True
        self.websocket = WebSocketSession(self, request, upgrade, self._scope(request),
                                          self.parser.detach())
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        return True

    def refuse(self, error: HttpError) -> None:
        """Answer a request the parser refused, and close; after the
        response in progress, if there is one."""
        if self.cycle is not None or self.pending:
            self.refusal = error
            return
        if not self.transport.is_closing():
            body = f"{error.status} {error.reason}\n".encode()
            self.transport.write(simple_response(
                error.status, body, keep_alive=False, extra_headers=self.server.server_header))
            if self.server.access is not None:
                self.server.access.record(self.peer, None, error.status, len(body), time.time())
            self.transport.close()

    # -- flow control ------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until the transport takes writes again."""
        if self.closed:
            raise ClientDisconnected("the client closed the connection")
        if not self.write_paused:
            return
        waiter = self.server.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter
        if self.closed:
            raise ClientDisconnected("the client closed the connection")

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def send_file(self, file: Any, size: int) -> None:
        """``size`` bytes of ``file`` from its start: the kernel's sendfile
        where the loop has it, else read and written in pieces."""
        loop = self.server.loop
        try:
            await loop.sendfile(self.transport, file, 0, size)
            return
        except NotImplementedError:  # uvloop
            pass
        sent = 0
        while sent < size:
            data = file.read(min(_SENDFILE_CHUNK, size - sent))
            if not data:
                raise RuntimeError("file shrank while being sent")
            self.transport.write(data)
            sent += len(data)
            if self.write_paused:
                await self.drain()

    # -- timeouts and shutdown -----------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        if self.websocket is not None:
            self.websocket.check_timeouts(now)
            return
        config = self.server.config
        cycle = self.cycle
        if cycle is not None:
            timeout = config.request_timeout
            if (timeout is not None and not cycle.timed_out and cycle.task is not None
                    and now - cycle.started_at > timeout):
                cycle.timed_out = True
                cycle.task.cancel()
        elif self.head_started is not None:
            if now - self.head_started > config.header_timeout:
                self.refuse(HttpError(408, "Request Timeout"))
        elif now - self.last_activity > config.idle_timeout:
            self.transport.close()

    def shutdown(self) -> None:
        """The server stops: close when idle, after the response in progress
        otherwise (which then says ``Connection: close`` if it can)."""
        if self.websocket is not None:
            self.websocket.shutdown()
        elif self.cycle is None:
            self.transport.close()
        else:
            self.cycle.keep_alive = False
            self.pending.clear()

    def task(self) -> Optional[asyncio.Task[None]]:
        """The application task this connection is waiting for, if any."""
        if self.websocket is not None:
            return self.websocket.task
        return self.cycle.task if self.cycle is not None else None
