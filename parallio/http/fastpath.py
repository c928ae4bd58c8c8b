"""PyParallel's HTTP fast path: ``http11 = True`` on a protocol class.

``GET /name`` calls the class's method ``name(self, transport, request)``
(``GET /`` calls ``index``). What it returns is the response body:

* ``bytes`` -> ``text/plain``, ``str`` -> ``text/html`` (UTF-8),
* ``None`` -> the method answered by itself (``transport.sendfile`` or
  ``transport.send`` of a whole response),
* anything else -> JSON (``application/json``).

``HEAD`` gets the same headers without the body; other methods get 405.
Only public methods defined on the class (and its bases other than
``object``) are routes: names starting with ``_`` and the protocol callbacks
are never reachable from a URL. The request is also in
``transport.http_header`` (``.method``, ``.path``, ``.headers``,
``.http_version``), as in PyParallel.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from .connection import SERVER_HEADER, HttpProtocol
from .parser import Request
from .response import http_date, simple_response

if TYPE_CHECKING:
    from ..transport import Transport

_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_NOT_ROUTES = frozenset((
    "connection_made", "data_received", "lines_received", "send_complete",
    "exception_handler", "connection_lost", "initial_bytes_to_send",
    "next_bytes_to_send", "handle_request", "refuse", "check_timeouts",
))
_ALLOW = [("Allow", "GET, HEAD")]
# The common answer (200, HTTP/1.1, kept alive) from one prepared prefix per
# content type and one format operation: the per-request cost that the
# benchmark's plaintext and json scenarios measure.
_OK_PREFIX = {content_type: b"HTTP/1.1 200 OK\r\nServer: parallio\r\nContent-Type: "
              + content_type + b"\r\n" for content_type in (_TEXT, _HTML, _JSON)}


def routes_of(app_class: type) -> dict[str, str]:
    """URL path -> method name, for the public methods of ``app_class``."""
    routes = {}
    for klass in reversed(app_class.__mro__[:-1]):  # every base but object
        for name, value in vars(klass).items():
            if name.startswith("_") or name in _NOT_ROUTES or not callable(value):
                continue
            routes["/" if name == "index" else "/" + name] = name
    return routes


def fast_path_protocol(app_class: type) -> type:
    """The per-connection protocol class serving ``app_class``'s methods."""
    routes = routes_of(app_class)

    class FastPath(HttpProtocol):
        limits = getattr(app_class, "limits", HttpProtocol.limits)
        header_timeout = getattr(app_class, "header_timeout", HttpProtocol.header_timeout)
        idle_timeout = getattr(app_class, "idle_timeout", HttpProtocol.idle_timeout)

        def connection_made(self, transport: "Transport") -> None:
            super().connection_made(transport)
            self.app = app_class()
            self.handlers: dict[str, Callable[..., Any] | None] = {}

        def handle_request(self, transport: "Transport", request: Request) -> bool:
            method = request.method
            head = method == "HEAD"
            if method != "GET" and not head:
                transport.send(simple_response(
                    405, b"Method Not Allowed\n", keep_alive=request.keep_alive,
                    extra_headers=[*_ALLOW, ("Server", "parallio")],
                    request_version=request.http_version))
                return request.keep_alive
            handler = self._handler(request.path)
            if handler is None:
                transport.send(simple_response(
                    404, b"Not Found\n", keep_alive=request.keep_alive,
                    extra_headers=SERVER_HEADER, request_version=request.http_version,
                    head_only=head))
                return request.keep_alive
            transport.http_header = request
            result = handler(transport, request)
            if result is None:
                return request.keep_alive
            cls = result.__class__
            if cls is bytes:
                body, content_type = result, _TEXT
            elif cls is str:
                body, content_type = result.encode(), _HTML
            else:
                body, content_type = json.dumps(result).encode(), _JSON
            if request.keep_alive and not head and request.http_version == (1, 1):
                transport.send(b"%sDate: %s\r\nContent-Length: %d\r\n\r\n%s" % (
                    _OK_PREFIX[content_type], http_date(), len(body), body))
                return True
            transport.send(simple_response(
                200, body, content_type, request.keep_alive, SERVER_HEADER,
                request_version=request.http_version, head_only=head))
            return request.keep_alive

        def _handler(self, path: str) -> Callable[..., Any] | None:
            try:
                return self.handlers[path]
            except KeyError:
                name = routes.get(path)
                handler = getattr(self.app, name) if name else None
                if len(self.handlers) < 64:
                    self.handlers[path] = handler
                return handler

    FastPath.__qualname__ = f"FastPath[{app_class.__qualname__}]"
    return FastPath
