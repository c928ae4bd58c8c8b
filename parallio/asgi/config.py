"""What one ASGI server is told: the application and its settings."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, MutableMapping, Optional, Union

from ..http.accesslog import AccessLogConfig
from ..http.parser import Limits
from ..tls import TlsConfig
from ..trust import DEFAULT_TRUSTED, TrustedAddresses

__all__ = ["ASGIApp", "Config", "load_app", "AppLoadError"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application: ``await app(scope, receive, send)``.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("parallio.asgi")


@dataclass(frozen=True)
class Config:
    """Settings of :func:`parallio.asgi.serve_asgi`; every field has a
    default a production server can start with.

    Timeouts are in seconds and enforced by a once-a-second sweep, so to
    within about a second. ``request_timeout`` None lets an HTTP request's
    application run for ever; WebSocket sessions are never cut by it.
    """

    #: The mount point, prefixed to ``path`` and ``raw_path`` (like uvicorn's
    #: ``--root-path``, for an application behind a proxy that strips it).
    root_path: str = ""
    #: Request size limits of the HTTP parser.
    limits: Limits = field(default_factory=Limits)
    #: Seconds a client gets to send a whole request head (then 408).
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open.
    idle_timeout: float = 60.0
    #: Seconds an application gets to finish a response; then its task is
    #: cancelled and the client gets a 503 (or, if the response had started,
    #: a closed connection).
    request_timeout: Optional[float] = None
    #: Seconds in-flight requests get to finish when the server stops.
    drain_timeout: float = 10.0
    #: "auto" (use the lifespan protocol if the application speaks it),
    #: "on" (an application that fails it stops the server), "off".
    lifespan: str = "auto"
    #: Largest request body piece in one ``http.request`` event.
    body_chunk_size: int = 64 * 1024
    #: Largest WebSocket message accepted (bytes, after decompression): 1009.
    ws_max_message_size: int = 16 * 1024 * 1024
    #: Seconds between keep-alive pings on an idle WebSocket (None: never).
    ws_ping_interval: Optional[float] = 20.0
    #: Seconds a ping may wait for its pong before the session is closed.
    ws_ping_timeout: Optional[float] = 20.0
    #: Seconds a closing WebSocket waits for the peer's close frame.
    ws_close_timeout: float = 5.0
    #: Negotiate permessage-deflate when a client offers it.
    ws_per_message_deflate: bool = True
    #: Messages queued for an application that is not receiving before the
    #: socket stops being read (backpressure).
    ws_max_queue: int = 32
    #: The URL scheme reported to the application ("https" behind a TLS proxy
    #: that sends no X-Forwarded-Proto); "https" anyway with ``tls``.
    scheme: str = "http"
    #: Serve TLS with these settings (each worker builds its context).
    tls: Optional[TlsConfig] = None
    #: The proxies whose X-Forwarded-For/-Proto/-Host and Forwarded fields
    #: set the scope's ``client`` and ``scheme`` (addresses, networks, "*").
    forwarded_allow_ips: Union[str, TrustedAddresses] = DEFAULT_TRUSTED
    #: The ``Server`` header value (None: send none).
    server_header: Optional[str] = "parallio"
    #: Where and how each worker logs the responses (None: no access log).
    access_log: Optional[AccessLogConfig] = None

    def __post_init__(self) -> None:
        if self.lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {self.lifespan!r}")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path {self.root_path!r} must start with '/' and not end with one")
        if self.body_chunk_size < 1:
            raise ValueError("body_chunk_size must be positive")
        object.__setattr__(self, "forwarded_allow_ips",
                           TrustedAddresses.of(self.forwarded_allow_ips))


class AppLoadError(Exception):
    """An application named MODULE:ATTRIBUTE that cannot be loaded."""


def load_app(path: str) -> ASGIApp:
    """The object ``module:attribute`` names (dots go through attributes:
    ``pkg.mod:obj.app``)."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise AppLoadError(f"ASGI application {path!r}: expected MODULE:ATTRIBUTE")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        if error.name and module_name.startswith(error.name):
            raise AppLoadError(f"ASGI application {path!r}: no module {error.name!r}") from error
        raise
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(f"ASGI application {path!r}: {module_name} has no attribute "
                               f"{attribute!r}") from None
    if not callable(target):
        raise AppLoadError(f"ASGI application {path!r} is not callable")
    return target
