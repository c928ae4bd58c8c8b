"""The ASGI ``websocket`` scope on a connection that asked to upgrade.

The session answers the handshake the way the application decides
(``websocket.accept`` with its subprotocol and headers, ``websocket.close``
for a 403, or a whole HTTP response through the ``websocket.http.response``
extension), then runs the frame codec of :mod:`parallio.http.websocket`:
whole messages go to the application (fragments reassembled, text
validated, permessage-deflate undone), pings are answered, idle sessions
are pinged, and a close is answered and reported as ``websocket.disconnect``
with the peer's code and reason (1006 when the connection just dropped).
A peer that breaks the protocol is closed with the code RFC 6455 gives.
Messages the application does not receive queue up to ``ws_max_queue``,
then the socket stops being read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Optional

from ..http import websocket as codec
from ..http.parser import Request
from ..http.websocket import (
    CloseCode,
    CloseReceived,
    Message,
    Ping,
    Pong,
    UpgradeRequest,
    WebSocketConnection,
    WebSocketError,
    negotiate_deflate,
)
from .shared import ClientDisconnected, Connection, ResponseHeaders, Wakeup


__all__ = ["WebSocketSession"]

log = logging.getLogger("parallio.asgi")

# Session states.
CONNECTING = "CONNECTING"  # waiting for the application's answer to websocket.connect
DENYING = "DENYING"  # sending the application's HTTP denial response
OPEN = "OPEN"
CLOSING = "CLOSING"  # this side sent its close frame
CLOSED = "CLOSED"  # the session is over (the application is told so)

_HANDSHAKE_HEADERS = frozenset((b"sec-websocket-protocol", b"sec-websocket-accept",
                                b"sec-websocket-extensions", b"upgrade"))
# Bytes a client may send before the handshake is answered before the
# socket stops being read.
_MAX_EARLY_DATA = 1 << 20


class WebSocketSession:
    """One WebSocket connection and its application task."""

    def __init__(self, protocol: Connection, request: Request, upgrade: UpgradeRequest,
                 scope: dict, early_data: bytes) -> None:
        self.protocol = protocol
        self.server = protocol.server
        self.request = request
        self.upgrade = upgrade
        scope["type"] = "websocket"
        scope["asgi"]["spec_version"] = "2.5"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        scope["subprotocols"] = upgrade.subprotocols
        scope["extensions"] = {"websocket.http.response": {}}
        del scope["method"]
        self.scope = scope
        self.state = CONNECTING
        self.connection: Optional[WebSocketConnection] = None
        self.connect_delivered = False
        self.incoming: deque[dict] = deque()
        self.close_code: int = CloseCode.ABNORMAL
        self.close_reason = ""
        self.closing_since = 0.0
        self.last_seen = time.monotonic()
        self.ping_sent_at: Optional[float] = None
        self.reading_paused = False
        self.denial: Optional[tuple[int, ResponseHeaders, list[bytes]]] = None
        self._early = bytearray(early_data)
        self.wakeup = Wakeup()  # for a receive() waiting for a message
        self.task = self.server.loop.create_task(self.run(self.server.app))

    # -- the application's side ------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception as error:
            log.error("ASGI application raised on WebSocket %s", self.request.target,
                      exc_info=error)
            self._end(CloseCode.INTERNAL_ERROR, 500)
        else:
            if self.state in (CONNECTING, DENYING):
                log.error("ASGI application returned without answering the WebSocket handshake "
                          "for %s", self.request.target)
            self._end(CloseCode.NORMAL, 500)
        finally:
            self.wakeup.set()

    def _end(self, code: int, status: int) -> None:
        """The application is done: finish the session as it left it. A
        denial is buffered until its last piece, so one left unfinished has
        written nothing and can still become a whole error response."""
        if self.state in (CONNECTING, DENYING):
            self._http_response(status, ResponseHeaders(()), b"")
        elif self.state == OPEN:
            self._close(code, "")

    async def receive(self) -> dict:
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "websocket.connect"}
        while True:
            if self.incoming:
                event = self.incoming.popleft()
                if self.reading_paused and len(self.incoming) <= self.server.config.ws_max_queue // 2:
                    self.reading_paused = False
                    self.protocol.transport.resume_reading()
                return event
            if self.state == CLOSED:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            await self.wakeup.wait(self.server.loop)

    async def send(self, message: Any) -> None:
        kind = message["type"]
        state = self.state
        if state == OPEN:
            if kind == "websocket.send":
                data, text = message.get("bytes"), message.get("text")
                if (data is None) == (text is None):
                    raise ValueError("websocket.send needs exactly one of 'bytes' and 'text'")
                assert self.connection is not None
                self.protocol.transport.write(self.connection.send_message(
                    text if text is not None else data))
                if self.protocol.write_paused:
                    await self.protocol.drain()
            elif kind == "websocket.close":
                self._close(message.get("code") or CloseCode.NORMAL, message.get("reason") or "")
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")
        elif state == CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._http_response(403, ResponseHeaders(()), b"")
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if type(status) is not int or not 200 <= status <= 599:
                    raise ValueError(f"invalid response status {status!r}")
                self.denial = (status, ResponseHeaders(message.get("headers", ())), [])
                self.state = DENYING
            else:
                raise RuntimeError(f"expected websocket.accept, websocket.close or "
                                   f"websocket.http.response.start, not {kind!r}")
        elif state == DENYING and kind == "websocket.http.response.body":
            assert self.denial is not None
            status, headers, body = self.denial
            body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._http_response(status, headers, b"".join(body))
        elif state == DENYING:
            raise RuntimeError(f"expected websocket.http.response.body, not {kind!r}")
        else:
            raise ClientDisconnected(f"the WebSocket is {state.lower()}")

    def _accept(self, message: Any) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.upgrade.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client "
                             f"({', '.join(self.upgrade.subprotocols) or 'none'})")
        headers = ResponseHeaders(message.get("headers", ()), forbidden=_HANDSHAKE_HEADERS)
        config = self.server.config
        handshake = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                     (b"sec-websocket-accept", self.upgrade.accept.encode())]
        if subprotocol is not None:
            handshake.append((b"sec-websocket-protocol", subprotocol.encode()))
        deflate = None
        if config.ws_per_message_deflate and self.upgrade.extensions:
            negotiated = negotiate_deflate(self.upgrade.extensions)
            if negotiated is not None:
                response, deflate = negotiated
                handshake.append((b"sec-websocket-extensions", response.encode()))
        headers.pairs[:0] = handshake
        head = headers.render(101, self.server.server_header)
        self.protocol.transport.write(head)
        self.connection = WebSocketConnection(max_message_size=config.ws_max_message_size,
                                              deflate=deflate)
        self.state = OPEN
        early, self._early = bytes(self._early), bytearray()
        if early:
            self.data_received(early)
        self._resume_reading()

    def _http_response(self, status: int, headers: ResponseHeaders, body: bytes) -> None:
        """Refuse the handshake with an HTTP response, and close."""
        if headers.content_length is not None and headers.content_length != len(body):
            raise RuntimeError("denial response body does not match its Content-Length")
        self.state = CLOSED
        self.close_code = CloseCode.ABNORMAL
        protocol = self.protocol
        if protocol.closed:
            return
        if status in (204, 304):
            body = b""
        head = headers.render(status, self.server.server_header,
                              content_length=None if status in (204, 304) else len(body),
                              keep_alive=False, request_version=self.request.http_version)
        protocol.transport.write(head + body)
        protocol.transport.close()
        self.wakeup.set()

    def _close(self, code: int, reason: str) -> None:
        """Send this side's close frame; the peer's answer (or the close
        timeout) ends the session."""
        assert self.connection is not None
        self.protocol.transport.write(self.connection.close(code, reason))
        if self.connection.state == codec.CLOSED:  # this answered the peer's close
            self._closed(self.close_code, self.close_reason)
        else:
            self.state = CLOSING
            self.closing_since = time.monotonic()

    def _closed(self, code: int, reason: str) -> None:
        self.state = CLOSED
        self.close_code = code
        self.close_reason = reason
        self.protocol.transport.close()
        self.wakeup.set()

    # -- the connection's side -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        connection = self.connection
        if connection is None:
            self._early += data
            if len(self._early) > _MAX_EARLY_DATA and not self.reading_paused:
                self.reading_paused = True
                self.protocol.transport.pause_reading()
            return
        if self.state == CLOSED:
            return
        connection.receive_data(data)
        transport = self.protocol.transport
        incoming = self.incoming
        try:
            for event in connection.events():
                if type(event) is Message:
                    incoming.append({"type": "websocket.receive", "text": event.data}
                                    if type(event.data) is str else
                                    {"type": "websocket.receive", "bytes": event.data})
                elif type(event) is Ping:
                    if self.state == OPEN:
                        transport.write(connection.send_pong(event.payload))
                elif type(event) is Pong:
                    self.ping_sent_at = None
                elif type(event) is CloseReceived:
                    transport.write(connection.close(event.code))
                    self._closed(event.code, event.reason)
        except WebSocketError as error:
            log.info("WebSocket %s closed: %s", self.request.target, error)
            transport.write(connection.close(error.code, error.reason))
            self._closed(error.code, error.reason)
        if incoming:
            self.wakeup.set()
            if len(incoming) > self.server.config.ws_max_queue and not self.reading_paused:
                self.reading_paused = True
                transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.protocol.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # no more frames can come: close, reported as 1006 unless a close came

    def connection_lost(self) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            self.close_code = CloseCode.ABNORMAL
        self.wakeup.set()

    def check_timeouts(self, now: float) -> None:
        config = self.server.config
        if self.state == CLOSING:
            if now - self.closing_since > config.ws_close_timeout:
                self.protocol.transport.abort()
        elif self.state == OPEN and config.ws_ping_interval is not None:
            assert self.connection is not None
            if self.ping_sent_at is not None:
                if config.ws_ping_timeout is not None and now - self.ping_sent_at > config.ws_ping_timeout:
                    log.info("WebSocket %s: no pong in %ss, closing", self.request.target,
                             config.ws_ping_timeout)
                    self._close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                    self.protocol.transport.abort()
            elif now - self.last_seen > config.ws_ping_interval:
                self.ping_sent_at = now
                self.protocol.transport.write(self.connection.send_ping())

    def shutdown(self) -> None:
        """The server stops: open sessions are closed with 1012."""
        if self.state == OPEN:
            self._close(CloseCode.SERVICE_RESTART, "server shutting down")
