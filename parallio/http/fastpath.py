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
are never reachable from a URL. The request (``.method``, ``.path``,
``.headers``, ``.http_version``) is the handler's argument: PyParallel's
``transport.http_header``. One instance of the class serves each
connection.

:func:`parallio.register` turns such a class into :class:`FastPathApp`, so
nothing below this package needs to know about HTTP.
"""

from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, Any, Callable, Union

from .._ref import ObjectRef
from ..trust import TrustedAddresses
from .connection import HttpProtocol
from .parser import Request
from .response import SERVER_HEADER, render_result, simple_response

if TYPE_CHECKING:
    from ..transport import Transport

_NOT_ROUTES = frozenset((
    "connection_made", "data_received", "lines_received", "send_complete",
    "exception_handler", "connection_lost", "initial_bytes_to_send",
    "next_bytes_to_send", "handle_request", "refuse", "check_timeouts", "forwarded",
))
_ALLOW = [("Allow", "GET, HEAD"), ("Server", "parallio")]


def routes_of(app_class: type) -> dict[str, str]:
    """URL path -> method name, for the public methods of ``app_class``."""
    routes = {}
    for klass in reversed(app_class.__mro__[:-1]):  # every base but object
        for name, value in vars(klass).items():
            if name.startswith("_") or name in _NOT_ROUTES or not callable(value):
                continue
            routes["/" if name == "index" else "/" + name] = name
    return routes


def _handlers_of(app_class: type) -> dict[str, Union[Callable[..., Any], str]]:
    """URL path -> the plain function to call with the app instance, or the
    method's name where the attribute is something else (a staticmethod, a
    classmethod): resolved once per class, not per connection or request."""
    handlers: dict[str, Union[Callable[..., Any], str]] = {}
    for path, name in routes_of(app_class).items():
        attribute = inspect.getattr_static(app_class, name)
        handlers[path] = attribute if isinstance(attribute, types.FunctionType) else name
    return handlers


def fast_path_protocol(app_class: type) -> type:
    """The per-connection protocol class serving ``app_class``'s methods."""
    handlers = _handlers_of(app_class)

    class FastPath(HttpProtocol):
        __slots__ = ("app",)
        limits = getattr(app_class, "limits", HttpProtocol.limits)
        header_timeout = getattr(app_class, "header_timeout", HttpProtocol.header_timeout)
        idle_timeout = getattr(app_class, "idle_timeout", HttpProtocol.idle_timeout)
        forwarded_allow_ips = TrustedAddresses.of(
            getattr(app_class, "forwarded_allow_ips", HttpProtocol.forwarded_allow_ips))

        def connection_made(self, transport: "Transport") -> None:
            HttpProtocol.connection_made(self, transport)
            self.app = app_class()

        def handle_request(self, transport: "Transport", request: Request) -> bool:
            method = request.method
            if method != "GET" and method != "HEAD":
                response = simple_response(
                    405, b"Method Not Allowed\n", keep_alive=request.keep_alive,
                    extra_headers=_ALLOW, request_version=request.http_version)
            else:
                handler = handlers.get(request.path)
                if handler is None:
                    response = simple_response(
                        404, b"Not Found\n", keep_alive=request.keep_alive,
                        extra_headers=SERVER_HEADER, request_version=request.http_version,
                        head_only=method == "HEAD")
                else:
                    if handler.__class__ is str:
                        bound = getattr(self.app, handler)
                        result = bound(transport, request)
                    else:
                        result = handler(self.app, transport, request)  # type: ignore[operator]
                    if result is None:
                        return request.keep_alive  # the handler sent its own response
                    response = render_result(result, request)
            transport.send(response)
            if self.access is not None:
                self.note(response)
            return request.keep_alive

    FastPath.__qualname__ = f"FastPath[{app_class.__qualname__}]"
    return FastPath


class FastPathApp:
    """What :func:`parallio.register` makes of an ``http11 = True`` class:
    sent to workers by value, it makes the class's fast-path protocol there
    (the class itself travels by import path)."""

    def __init__(self, app: ObjectRef) -> None:
        self.app = app
        self._protocol: type | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"app": self.app, "_protocol": None}

    def __parallio_ref__(self) -> ObjectRef:
        return ObjectRef(self.app.path, self, by_value=True)

    def __parallio_protocol__(self) -> type:
        if self._protocol is None:
            self._protocol = fast_path_protocol(self.app.resolve())
        return self._protocol
