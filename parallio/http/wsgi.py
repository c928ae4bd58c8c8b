"""WSGI (PEP 3333) applications on every worker.

:class:`WsgiServer` wraps an application, named by import path or given as
an object, and is registered like a protocol class::

    parallio.register(parallio.server("0.0.0.0", 8000), WsgiServer("myproject.wsgi:application"))

or from the command line: ``python -m parallio wsgi myproject.wsgi:application``.

What the server guarantees the application:

* A full environ: CGI variables (``PATH_INFO`` is the percent-decoded path
  as latin-1 text, per PEP 3333), ``HTTP_*`` for every header (repeats
  joined with ``, ``, cookies with ``; ``; names with ``_`` are dropped so
  that ``X-User`` cannot be forged as ``X_User``), ``REMOTE_ADDR``/
  ``REMOTE_PORT``, ``REQUEST_URI`` (the raw target), the ``wsgi.*`` keys
  (``wsgi.input_terminated`` is True).
* ``wsgi.input`` holds the whole request body, however it was framed
  (Content-Length or chunked: the parser decodes and bounds it, so
  ``CONTENT_LENGTH`` is its real length). ``wsgi.errors`` is ``sys.stderr``.
* ``start_response`` checks its arguments (a bad status or header is an
  error, hence a 500), honours ``exc_info`` (replaces the headers if none
  were sent; re-raises if they were) and returns ``write()``.
* The head goes out with the first non-empty piece of the body, or when
  the iterable ends. The body is framed by the application's
  Content-Length (a body longer or shorter than it cuts the connection), or
  computed when the iterable is a one-item list, or chunked for HTTP/1.1,
  or delimited by closing the connection for HTTP/1.0. Pieces are taken
  from the iterable only as the client reads them (see
  :class:`~parallio.http.server.StreamingHttpProtocol`), so a body of any
  size streams in bounded memory. ``write()`` cannot wait: what it is given
  is queued at once.
* The iterable's ``close()`` is always called: after the body, after an
  error, when the client disconnects, and after a HEAD request's head
  (whose body is never produced).
* An exception before the head is sent is a 500 and a close; after it, the
  connection is cut (the only way to tell the client the body is broken).
  Either way it is logged with its traceback.

A WSGI application is synchronous: while it runs, its worker serves nothing
else, so slow work blocks one core, as in any pre-forked WSGI server.
"""

from __future__ import annotations

import importlib
import io
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional
from urllib.parse import unquote_to_bytes

from .._ref import ObjectRef
from ..worker import current_worker
from .connection import HttpProtocol
from .parser import Limits, Request
from .response import SERVER_HEADER, PreparedHeaders, server_headers, simple_response
from .server import BodyStream, StreamHead, StreamingHttpProtocol, module_level_ref

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["WsgiServer"]

log = logging.getLogger("parallio.http")

# Hop-by-hop fields (RFC 9110 §7.6.1) belong to the server; PEP 3333 forbids
# applications to send them. Connection is the exception: "close" is honoured.
_HOP_BY_HOP = frozenset(("keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade"))
_STATUS_DIGITS = frozenset("0123456789")


class _Exchange:
    """One request's start_response state."""

    __slots__ = ("status", "headers", "length", "close", "stream")

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.headers: Optional[PreparedHeaders] = None
        self.length: Optional[int] = None
        self.close = False
        self.stream: Optional[BodyStream] = None

    def start_response(self, status: str, response_headers: list, exc_info: Any = None
                       ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.stream is not None and self.stream.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        code = _check_status(status)
        if type(response_headers) is not list:
            raise TypeError(f"response headers must be a list, not {type(response_headers).__name__}")
        pairs = []
        length = None
        close = False
        for item in response_headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError(f"a response header must be a (name, value) tuple, not {item!r}")
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise TypeError(f"header names and values must be str: {item!r}")
            lowered = name.lower()
            if lowered == "content-length":
                value = value.strip()
                if not (value.isascii() and value.isdigit()) or (length is not None and int(value) != length):
                    raise ValueError(f"invalid Content-Length {value!r}")
                length = int(value)
            elif lowered == "connection":
                close = close or "close" in [token.strip().lower() for token in value.split(",")]
            elif lowered in _HOP_BY_HOP:
                raise ValueError(f"a WSGI application may not send the hop-by-hop field {name!r}")
            elif lowered in ("date", "server"):
                continue  # the server's own
            else:
                pairs.append((name, value))
        headers = server_headers(pairs)
        self.status, self.headers, self.length, self.close = code, headers, length, close
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        assert self.stream is not None
        self.stream.put(data)

    def make_head(self, ended: bool) -> StreamHead:
        if self.status is None:
            raise AssertionError("the application returned a body without calling start_response()")
        assert self.headers is not None
        return self.status, self.headers, self.length, not self.close


def _check_status(status: Any) -> int:
    if type(status) is not str:
        raise TypeError(f"the status must be str, not {type(status).__name__}")
    code, space, reason = status.partition(" ")
    if len(code) != 3 or not _STATUS_DIGITS.issuperset(code) or not space:
        raise ValueError(f"invalid status {status!r}: need '200 OK' form")
    number = int(code)
    if number < 200:
        raise ValueError(f"a WSGI application cannot send a {number} response")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in reason):
        raise ValueError(f"control character in status {status!r}")
    return number


class _WsgiProtocol(StreamingHttpProtocol):
    """Serves one connection with the application of ``server``."""

    __slots__ = ("application", "base_environ")

    server: "WsgiServer"

    def connection_made(self, transport: "Transport") -> None:
        StreamingHttpProtocol.connection_made(self, transport)
        self.application = self.server.application
        self.base_environ = self.server.base_environ(transport)

    def respond(self, transport: "Transport", request: Request) -> bool:
        if request.method == "CONNECT":
            # A tunnel is no request an application can answer: its body
            # would be the tunnelled stream.
            response = simple_response(
                501, b"501 Not Implemented\n", keep_alive=False, extra_headers=SERVER_HEADER,
                request_version=request.http_version)
            transport.send(response)
            if self.access is not None:
                self.note(response)
            return False
        environ = self.base_environ.copy()
        _fill_environ(environ, request)
        exchange = _Exchange()
        stream = exchange.stream = self.open_stream(transport, request, exchange.make_head)
        try:
            result = self.application(environ, exchange.start_response)
        except Exception:
            # Nothing iterable to close: the application did not return.
            stream.iterator = None
            self._stream_failed(stream)
            return False
        if exchange.length is None and type(result) in (list, tuple) and len(result) == 1 \
                and type(result[0]) is bytes:
            # PEP 3333 lets the server compute the length of a one-item body.
            exchange.length = len(result[0])
        self.run_stream(stream, result)
        return request.keep_alive


def _fill_environ(environ: dict[str, Any], request: Request) -> None:
    raw_path = request.raw_path
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = (unquote_to_bytes(raw_path).decode("latin-1")
                            if raw_path.startswith("/") else "")
    environ["QUERY_STRING"] = request.query
    environ["REQUEST_URI"] = request.target
    major, minor = request.http_version
    environ["SERVER_PROTOCOL"] = f"HTTP/{major}.{minor}"
    body = request.body
    environ["wsgi.input"] = io.BytesIO(body)
    if body or "content-length" in request.headers or "transfer-encoding" in request.headers:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in request.headers:
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length" or "_" in name:
            continue
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
    if request.target[:1] != "/" and request.authority:
        # An absolute-form target names the host, whatever Host says
        # (RFC 9112 §3.2.2).
        environ["HTTP_HOST"] = request.authority


class WsgiServer:
    """Serves the WSGI application ``app`` (an import path ``module:name``
    or the callable itself); see the module docstring.

    Given a path, the server is sent to workers by value and each worker
    imports the application itself; ``python -m parallio wsgi`` works this
    way, and ``parallel="auto"`` picks processes over isolated interpreters
    when the application's module cannot be imported in one (and logs why).
    Given a callable, create the WsgiServer at module level, where workers
    find it by import path.
    """

    def __init__(self, app: str | Callable[..., Iterable[bytes]], *,
                 limits: Optional[Limits] = None, header_timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None) -> None:
        if isinstance(app, str):
            if ":" not in app:
                raise ValueError(f"{app!r}: name the application as 'module:name'")
            self.app_path: Optional[str] = app
            self._application: Any = None
        elif callable(app):
            self.app_path = None
            self._application = app
        else:
            raise TypeError(f"a WSGI application is callable, not {app!r}")
        self.limits = limits if limits is not None else HttpProtocol.limits
        self.header_timeout = header_timeout if header_timeout is not None else HttpProtocol.header_timeout
        self.idle_timeout = idle_timeout if idle_timeout is not None else HttpProtocol.idle_timeout
        self._module = sys._getframe(1).f_globals.get("__name__")
        self._protocol: Optional[type] = None

    @property
    def application(self) -> Callable[..., Iterable[bytes]]:
        """The application, imported on first use."""
        if self._application is None:
            assert self.app_path is not None
            module_name, _, qualname = self.app_path.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if not callable(obj):
                raise TypeError(f"{self.app_path} is not callable: {obj!r}")
            self._application = obj
        return self._application

    def base_environ(self, transport: "Transport") -> dict[str, Any]:
        """The environ keys that are the same for every request of a connection."""
        local, peer = transport.local, transport.peer
        # A unix socket has a path, not a host and port; its peer, nothing.
        if not isinstance(local, tuple):
            local = (local or "localhost", "")
        if not isinstance(peer, tuple):
            peer = ("", "")
        worker = current_worker()
        host = worker.spec.host if worker is not None else "threads"
        return {
            "SCRIPT_NAME": "",
            "SERVER_NAME": str(local[0]),
            "SERVER_PORT": str(local[1]),
            "REMOTE_ADDR": str(peer[0]),
            "REMOTE_PORT": str(peer[1]),
            "SERVER_SOFTWARE": "parallio",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            # Workers of the threads host share the application object; in
            # the other hosts each has its own copy, as separate processes do.
            "wsgi.multithread": host == "threads",
            "wsgi.multiprocess": host != "threads",
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def __getstate__(self) -> dict:
        if self.app_path is None:
            raise TypeError("a WsgiServer given the application object travels by import "
                            "path; only one given a 'module:name' path is sent by value")
        state = dict(vars(self))
        state["_application"] = None
        state["_protocol"] = None
        return state

    def __parallio_ref__(self) -> ObjectRef:
        if self.app_path is not None:
            return ObjectRef(self.app_path, self, by_value=True)
        return module_level_ref(self, self._module, "WsgiServer")

    def __parallio_protocol__(self) -> type:
        if self._protocol is None:
            self.application  # import now: a failure stops the worker's start, loudly
            self._protocol = type(
                "WsgiServer", (_WsgiProtocol,),
                {"server": self, "limits": self.limits, "header_timeout": self.header_timeout,
                 "idle_timeout": self.idle_timeout, "__module__": __name__})
        return self._protocol
