"""What the HTTP and WebSocket sides share: an application's response
headers, the error for a client that is gone, the wake-up of a waiting
``receive()``, and what each side needs of the server and of the
connection (as protocols, so the modules need not import each other)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Coroutine, Optional, Protocol

from ..http.response import PreparedHeaders, prepare_headers, render_head
from .config import ASGIApp, Config

if TYPE_CHECKING:
    from ..http.accesslog import AccessLog

__all__ = ["ClientDisconnected", "ResponseHeaders", "Wakeup", "Server", "Connection"]


class Server(Protocol):
    """What a connection needs of the server it belongs to."""

    app: ASGIApp
    config: Config
    state: dict
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    stopping: bool
    server_header: PreparedHeaders
    raw_root_path: bytes
    #: The worker's access log, or None.
    access: Optional["AccessLog"]
    #: "https" for TLS (or as the configuration says), else "http".
    scheme: str
    #: The TLS extension's connection-independent part (the server's certificate).
    server_cert: Optional[str]

    def start_task(self, coroutine: Coroutine[Any, Any, None]) -> "asyncio.Task[None]": ...

    def connection_closed(self, connection: Any) -> None: ...


class Connection(Protocol):
    """What a WebSocket session needs of the HTTP connection it upgraded."""

    transport: Any
    server: Server
    closed: bool
    write_paused: bool

    async def drain(self) -> None: ...


class ClientDisconnected(OSError):
    """``send()`` after the client closed the connection (ASGI spec 2.4)."""


def _as_bytes(item: Any, value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):  # lenient: the spec says bytes, some applications pass str
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {item!r} is not latin-1") from None
    raise TypeError(f"ASGI header names and values are bytes, not {item!r}")


class ResponseHeaders:
    """An application's response headers, split into what the server frames
    itself (length, connection) and what it passes on; :meth:`render`
    validates what is passed on."""

    __slots__ = ("pairs", "content_length", "close", "has_date", "has_server")

    def __init__(self, headers: Any, *, forbidden: frozenset = frozenset()) -> None:
        pairs = []
        content_length: Optional[int] = None
        close = has_date = has_server = False
        for item in headers:
            name, value = item
            name = _as_bytes(item, name)
            value = _as_bytes(item, value)
            lowered = name.lower()
            if lowered in forbidden:
                raise ValueError(f"the application may not set the header {lowered!r}")
            if lowered == b"content-length":
                if not (value.isdigit() and len(value) < 19) or (
                        content_length is not None and int(value) != content_length):
                    raise ValueError(f"invalid Content-Length {value!r}")
                content_length = int(value)
            elif lowered == b"transfer-encoding":
                pass  # the server frames the body (the spec: "must ignore")
            elif lowered == b"connection":
                close = close or b"close" in [token.strip() for token in value.lower().split(b",")]
            else:
                if lowered == b"date":
                    has_date = True
                elif lowered == b"server":
                    has_server = True
                pairs.append((name, value))
        self.pairs = pairs
        self.content_length = content_length
        self.close = close
        self.has_date = has_date
        self.has_server = has_server

    def render(self, status: int, server_header: bytes, **framing: Any) -> bytes:
        """The response head; ValueError on an invalid name or value.
        ``framing`` is :func:`~parallio.http.response.render_head`'s."""
        prepared = prepare_headers(self.pairs)
        if server_header and not self.has_server:
            prepared = PreparedHeaders(server_header + prepared)
        return render_head(status, prepared, date=not self.has_date, **framing)


class Wakeup:
    """Lets one ``receive()`` wait until the connection has news for it."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: Optional[asyncio.Future[None]] = None

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        self._future = loop.create_future()
        await self._future

    def set(self) -> None:
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)
