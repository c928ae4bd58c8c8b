"""HttpServer: routes, static files and streamed responses on every worker.

An :class:`HttpServer` holds a route table and makes the protocol class
(an :class:`~parallio.http.connection.HttpProtocol`) that serves it, one
instance per connection. Two ways to write one:

The modern way, an instance and decorators::

    from parallio.http import HttpServer

    app = HttpServer()
    app.static("/files/", "/srv/www", listing=True)

    @app.route("/hello/{name}")
    def hello(transport, request, name, greeting="Hello"):
        return f"<p>{greeting}, {name}!</p>"      # /hello/bob?greeting=Hi

    @app.route("/items", methods=["POST"])
    def add_item(transport, request):
        return {"stored": len(request.body)}

    parallio.register(parallio.server("0.0.0.0", 8080), app)
    parallio.run()

PyParallel's way, a subclass whose decorated methods are routes (a bare
``@route`` serves ``/name``)::

    from parallio.http import HttpServer, route

    class Wiki(HttpServer):
        @route
        def plaintext(self, transport, request):
            return b"Hello, World!"

        @route("/offsets/{prefix}")
        def offsets(self, transport, request, prefix, limit="10"):
            return titles.starting_with(prefix)[: int(limit)]

    parallio.register(parallio.server("0.0.0.0", 8080), Wiki)

Both are registered like a protocol class: workers of every host find the
server by import path, so create the instance (or define the subclass) at
module level. ``python -m parallio serve module:app`` works too.

Handlers are called as ``handler(transport, request, **arguments)``:
``request`` is a :class:`~parallio.http.parser.Request` (``method``,
``path``, ``query``, ``headers``, ``body``: bodies arrive whole, up to
``limits.max_body``). The arguments are the path parameters and then the
query-string fields the handler has parameters for (the first value of a
repeated field; fields it has no parameter for are ignored, unless it takes
``**kwargs``). A required parameter that the query string does not supply is
a 400. What a handler returns is the response, as in the ``http11`` fast
path: ``bytes`` -> ``text/plain``, ``str`` -> ``text/html`` (UTF-8), a
:class:`Response` for any status, headers or a streamed body, ``None`` when
the handler sent the whole response itself, anything else -> JSON. Raising
:class:`~parallio.http.parser.HttpError` answers with its status (the
connection stays open); any other exception is a 500 and a close.

Routing: an exact path first, then the patterns in the order they were added
(``{name}`` matches one segment, ``{name:int}`` digits, passed as an
``int``, ``{name:path}`` the rest of the path, slashes included), then the
longest matching prefix route (``prefix=True``; :meth:`HttpServer.static`
mounts are prefix routes). Paths are matched after percent-decoding. A
route that matches with no handler for the method is a 405 with ``Allow``;
``OPTIONS`` is answered with 204 and ``Allow``; ``HEAD`` runs the ``GET``
handler and sends its head only. Nothing matching is a 404.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import types
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union
from urllib.parse import parse_qsl

from .._ref import ObjectRef
from ..stream import HIGH_WATER
from ..trust import TrustedAddresses
from .connection import HttpProtocol
from .parser import HttpError, Limits, Request
from .response import (
    HTML,
    LAST_CHUNK,
    NO_CONTENT,
    SERVER_HEADER,
    TEXT,
    HeaderPairs,
    PreparedHeaders,
    check_header_value,
    chunk_header,
    render_head,
    render_result,
    server_headers,
    simple_response,
)
from .static import StaticFiles

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["HttpServer", "FileServer", "Response", "route", "StreamingHttpProtocol",
           "module_level_ref"]

log = logging.getLogger("parallio.http")

_OCTETS = b"application/octet-stream"
# Fields a Response may not set: the server owns framing and connection.
_RESERVED = frozenset(("content-length", "transfer-encoding", "connection", "date", "server",
                       "content-type", "keep-alive", "upgrade", "te", "trailer"))
_MAX_QUERY_FIELDS = 256

def module_level_ref(obj: Any, module_name: Optional[str], kind: str) -> ObjectRef:
    """The import path of ``obj``, found among the globals of the module it
    was created in: how workers of every host find a server object."""
    module = sys.modules.get(module_name or "")
    if module is not None:
        for name, value in vars(module).items():
            if value is obj and not name.startswith("__"):
                return ObjectRef(f"{module_name}:{name}", obj)
    raise ValueError(
        f"workers find a {kind} by import path: create it at module level "
        f"(app = {kind}(...)) in an importable module, not inside a function")


def _caller_module(obj: Any) -> Optional[str]:
    """The module whose code created ``obj``, skipping the ``__init__``
    methods of its own class chain (a subclass calling super().__init__)."""
    frame: Optional[types.FrameType] = sys._getframe(2)
    while frame is not None and frame.f_code.co_name == "__init__" \
            and frame.f_locals.get("self") is obj:
        frame = frame.f_back
    return frame.f_globals.get("__name__") if frame is not None else None


class Response:
    """A response with any status, extra headers, or a streamed body.

    ``body`` is ``bytes`` or ``str`` (UTF-8), or an iterable of ``bytes``
    that is sent as it is produced, no faster than the client reads
    (chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0; its
    ``close()`` is always called). ``content_type`` defaults by the body's
    type as for return values: ``text/plain`` for bytes, ``text/html`` for
    str, ``application/octet-stream`` for a stream. ``headers`` are
    validated now (ValueError); Content-Length, Transfer-Encoding,
    Connection, Date, Server and Content-Type belong to the server.
    """

    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, body: Union[bytes, str, Iterable[bytes]] = b"", status: int = 200,
                 headers: HeaderPairs = (), content_type: Union[str, bytes, None] = None) -> None:
        if not (isinstance(status, int) and 200 <= status <= 999):
            raise ValueError(f"invalid status {status!r} (1xx responses are the server's)")
        pairs = list(headers)
        for name, _ in pairs:
            lowered = name.lower() if isinstance(name, str) else name.decode("latin-1").lower()
            if lowered in _RESERVED:
                raise ValueError(f"{name!r} is set by the server; pass content_type= for Content-Type")
        if isinstance(body, str):
            body = body.encode()
            default_type = HTML
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
            default_type = TEXT
        else:
            default_type = _OCTETS
        if status in NO_CONTENT and body:
            raise ValueError(f"a {status} response has no body")
        self.status = status
        self.body = body
        self.headers = server_headers(pairs)
        # Validated now, for every kind of body: a CR or LF in it would split
        # the response.
        self.content_type = (default_type if content_type is None
                             else check_header_value(content_type))


# -- streamed bodies ----------------------------------------------------------

#: While a stream runs, at most this many bytes of further (pipelined)
#: requests are kept; past it the connection closes after the response.
HOLD_LIMIT = 1 << 20
# A stream refills the send queue up to this many bytes, then waits until
# the transport's queue is back under its low water mark.
_FILL = HIGH_WATER
# Pieces taken from an iterator per turn before other connections get theirs.
_PIECES_PER_TURN = 128
# Pieces smaller than this in total are joined into one buffer: one plain
# send() beats a gather-send of many small buffers.
_JOIN_BELOW = 16 * 1024

# A gather-send holds at most IOV_MAX (1024) buffers: pending pieces are
# handed over before they reach this many.
_MAX_BUFFERS = 512

# The framings a stream can use.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)
# What next() returns at the end of an iterator.
_END = object()

#: What a stream's head factory returns: status, prepared header lines (the
#: Server line included), the declared Content-Length or None, and whether
#: the connection may stay open afterwards.
StreamHead = tuple[int, PreparedHeaders, Optional[int], bool]


class BodyStream:
    """One response body sent piece by piece; see :meth:`StreamingHttpProtocol.open_stream`."""

    __slots__ = ("transport", "request", "make_head", "iterator", "close_iterable",
                 "started", "flushed", "framing", "remaining", "keep_alive", "pending",
                 "pending_bytes", "scheduled", "finished", "discard", "status", "body_bytes")

    def __init__(self, transport: "Transport", request: Request,
                 make_head: Callable[[bool], StreamHead]) -> None:
        self.transport = transport
        self.request = request
        self.make_head = make_head
        self.iterator: Optional[Iterator[Any]] = None
        self.close_iterable: Optional[Callable[[], Any]] = None
        self.started = False  # the head is rendered (into pending)
        self.flushed = False  # something was handed to the transport
        self.framing = _NONE
        self.remaining = 0  # bytes still owed under _LENGTH
        self.keep_alive = request.keep_alive
        self.pending: list = []  # framed buffers not yet handed to the transport
        self.pending_bytes = 0
        self.scheduled = False  # a call_later(0) pump is pending
        self.finished = False
        # HEAD, 204 and 304 send no body; the iterator is not drained either.
        self.discard = request.method == "HEAD"
        #: For the access log: the status sent, and the body bytes so far.
        self.status = 0
        self.body_bytes = 0

    @property
    def queued(self) -> int:
        return self.transport.write_buffer_size + self.pending_bytes

    def start(self, ended: bool) -> None:
        """Queue the head (done by the first :meth:`put` or by :meth:`end`
        otherwise). ``ended``: the body is known to be empty."""
        status, headers, length, keep_alive = self.make_head(ended)
        request = self.request
        self.started = True
        self.status = status
        self.keep_alive = keep_alive and request.keep_alive
        if status in NO_CONTENT:
            self.discard = True
            head = render_head(status, headers, keep_alive=self.keep_alive,
                               request_version=request.http_version)
        elif length is not None or ended:
            self.framing = _LENGTH
            self.remaining = 0 if length is None else length
            head = render_head(status, headers, content_length=self.remaining,
                               keep_alive=self.keep_alive, request_version=request.http_version)
        elif request.http_version >= (1, 1):
            self.framing = _CHUNKED
            head = render_head(status, headers, chunked=True, keep_alive=self.keep_alive,
                               request_version=request.http_version)
        else:
            # HTTP/1.0 has no chunks: the end of the body is the close.
            self.framing = _UNTIL_CLOSE
            if not self.discard:
                self.keep_alive = False
            head = render_head(status, headers, keep_alive=self.keep_alive,
                               request_version=request.http_version)
        if self.discard:
            self.framing = _NONE
        self.pending.append(head)
        self.pending_bytes += len(head)

    def put(self, data: Any) -> None:
        """Add one piece of the body (empty pieces are skipped)."""
        if not data:
            return
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"a response body piece must be bytes, not {type(data).__name__}")
        if not self.started:
            self.start(ended=False)
        framing = self.framing
        if framing == _NONE:
            return
        size = len(data)
        self.body_bytes += size
        if framing == _LENGTH:
            if size > self.remaining:
                raise ValueError(f"the body is longer than its Content-Length "
                                 f"({size} more bytes with {self.remaining} owed)")
            self.remaining -= size
            self.pending.append(data)
        elif framing == _CHUNKED:
            header = chunk_header(size)
            self.pending += (header, data, b"\r\n")
            size += len(header) + 2
        else:
            self.pending.append(data)
        self.pending_bytes += size
        if len(self.pending) >= _MAX_BUFFERS:
            self.flush()

    def end(self) -> None:
        """The body is complete: queue its end."""
        if not self.started:
            self.start(ended=True)
        if self.framing == _CHUNKED:
            self.pending.append(LAST_CHUNK)
            self.pending_bytes += len(LAST_CHUNK)
        elif self.framing == _LENGTH and self.remaining:
            raise ValueError(f"the body ended {self.remaining} bytes short of its Content-Length")
        self.finished = True

    def flush(self) -> None:
        """Hand what is pending to the transport as one send."""
        pending = self.pending
        if not pending:
            return
        if self.pending_bytes < _JOIN_BELOW or len(pending) == 1:
            data: Any = b"".join(pending) if len(pending) > 1 else pending[0]
        else:
            data = tuple(pending)
        self.pending = []
        self.pending_bytes = 0
        self.flushed = True
        self.transport.send(data)

    def close(self) -> None:
        """Call the iterable's ``close()`` (once), and let go of what the
        response held."""
        closer, self.close_iterable = self.close_iterable, None
        self.iterator = None
        # make_head is often a bound method of what holds this stream (WSGI's
        # start_response state): a cycle that would keep the request and its
        # body alive until the garbage collector's next full pass.
        self.make_head = _finished_head
        self.pending = []
        if closer is not None:
            try:
                closer()
            except Exception:
                log.exception("close() of the response body of %s %s failed",
                              self.request.method, self.request.target)


def _finished_head(ended: bool) -> StreamHead:
    raise RuntimeError("the response is over")


class StreamingHttpProtocol(HttpProtocol):
    """An :class:`HttpProtocol` whose responses may be streamed.

    :meth:`open_stream` starts a response whose body comes from an iterator
    (and, for WSGI's ``write()``, from :meth:`BodyStream.put`). Pieces are
    taken only while the connection's send queue is short, so a slow client
    (or a huge body) never makes the worker buffer more than about
    ``HIGH_WATER`` bytes; the rest is produced as sends complete. Requests
    that arrive meanwhile (pipelining) wait until the stream ends. Idle and
    stalled connections are closed after ``idle_timeout``, including a
    client that stops reading a response.
    """

    __slots__ = ("stream", "_dispatching", "_held", "_overflow")

    def connection_made(self, transport: "Transport") -> None:
        HttpProtocol.connection_made(self, transport)
        self.stream: Optional[BodyStream] = None
        self._dispatching = False
        self._held = 0
        self._overflow = False

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        HttpProtocol.connection_lost(self, transport, exc)
        stream = self.stream
        if stream is not None:
            self.stream = None
            self.holding = False
            stream.close()

    def data_received(self, transport: "Transport", data: bytes) -> None:
        if self.stream is not None:
            # Held for after the response in progress (not counted as
            # activity: a client that sends but never reads must time out).
            # The parser only buffers here; it raises only when dead, and a
            # dead parser never has a stream running.
            self._held += len(data)
            if self._held > HOLD_LIMIT:
                self._overflow = True
            elif not self._overflow:
                self.parser.feed(data)
            return
        HttpProtocol.data_received(self, transport, data)

    def handle_request(self, transport: "Transport", request: Request) -> bool:
        self._dispatching = True
        try:
            return self.respond(transport, request)
        finally:
            self._dispatching = False

    def respond(self, transport: "Transport", request: Request) -> bool:
        """What :meth:`HttpProtocol.handle_request` is for streaming servers."""
        raise NotImplementedError

    def check_timeouts(self, elapsed: float) -> None:
        if self.stream is None:
            HttpProtocol.check_timeouts(self, elapsed)
        elif not self.transport.closed:
            # A response is being produced: progress is the client taking it.
            self._note_progress(elapsed)
            self._check_output_progress()

    # -- streams ----------------------------------------------------------
    def open_stream(self, transport: "Transport", request: Request,
                    make_head: Callable[[bool], StreamHead]) -> BodyStream:
        """Begin a streamed response to ``request``.

        ``make_head(ended)`` is called once, when the first non-empty piece
        arrives (``ended`` False) or when the body ends empty (True). Feed
        pieces with :meth:`BodyStream.put` and/or hand over an iterator with
        :meth:`run_stream`; ``handle_request`` then returns
        ``request.keep_alive`` and the stream closes the connection itself
        if its framing needs it.
        """
        stream = BodyStream(transport, request, make_head)
        self.stream = stream
        self.holding = True
        return stream

    def run_stream(self, stream: BodyStream, iterable: Iterable[Any]) -> None:
        """Send the pieces of ``iterable`` as the client takes them; its
        ``close()`` is called at the end, on error and on disconnect."""
        stream.close_iterable = getattr(iterable, "close", None)
        try:
            stream.iterator = iter(iterable)
        except Exception:
            self._stream_failed(stream)
            return
        self._pump()

    def _pump(self) -> None:
        stream = self.stream
        if stream is None:
            return
        stream.scheduled = False
        transport = stream.transport
        iterator = stream.iterator
        try:
            if iterator is None:
                stream.end()
            else:
                budget = _PIECES_PER_TURN
                while True:
                    if transport.closing:
                        return
                    if stream.queued >= _FILL:
                        # Produce more once the client has taken most of it.
                        stream.scheduled = True
                        transport.when_drained(self._pump)
                        break
                    if not budget:
                        stream.scheduled = True
                        transport.loop.call_later(0, self._pump)
                        break
                    budget -= 1
                    piece = next(iterator, _END)
                    if piece is _END:
                        stream.end()
                        break
                    stream.put(piece)
                    if stream.discard and stream.started:
                        stream.end()  # HEAD, 204, 304: the head is all there is
                        break
            if transport.closing:
                return
            stream.flush()
        except Exception:
            self._stream_failed(stream)
            return
        if stream.finished:
            self._stream_done(stream)

    def _stream_done(self, stream: BodyStream) -> None:
        self.stream = None
        self.holding = False
        stream.close()
        transport = stream.transport
        if self.access is not None:
            self._log_stream(stream, stream.status)
        if not stream.keep_alive or self._overflow:
            transport.close()
        elif not self._dispatching and not transport.closing:
            # Finished from a drain: serve what was held meanwhile.
            self._held = 0
            try:
                self._serve(transport)
            except HttpError as error:
                self.refuse(transport, error.status, error.reason)

    def _stream_failed(self, stream: BodyStream) -> None:
        request = stream.request
        log.exception("the response to %s %s failed", request.method, request.target)
        transport = stream.transport
        transport.loop.counters.callback_errors += 1
        self.stream = None
        self.holding = False
        stream.close()
        if transport.closing:
            return
        if stream.flushed:
            # Part of the response may be out: only a cut connection can
            # tell the client it is incomplete.
            if self.access is not None:
                self._log_stream(stream, stream.status)
            transport.abort()
            return
        response = simple_response(
            500, b"Internal Server Error\n", keep_alive=False, extra_headers=SERVER_HEADER,
            request_version=request.http_version)
        transport.send(response)
        if self.access is not None:
            self.note(response)
            self._log_stream(stream, None)
        transport.close()

    def _log_stream(self, stream: BodyStream, status: Optional[int]) -> None:
        """Note a stream's end (``status`` None: noted already); it is
        logged here when it ended after :meth:`handle_request` returned, else
        by :meth:`_serve` on the way out."""
        if status is not None:
            self.status = status
            self.sent = stream.body_bytes
        if not self._dispatching:
            self.logged(stream.transport, stream.request)



# -- routes -------------------------------------------------------------------

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|path))?\}")
_CONVERTERS = {"str": (r"[^/]+", None), "int": (r"[0-9]+", int), "path": (r".+", None)}
_ALL_METHODS = "*"


class _Handler:
    """A handler and what its signature accepts."""

    __slots__ = ("func", "names", "any_keyword", "required", "taken")

    def __init__(self, func: Callable[..., Any], path_params: Sequence[str], where: str) -> None:
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: cannot read the handler's signature: {exc}") from None
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
            raise TypeError(f"{where}: a handler takes (transport, request, ...)")
        rest = positional[2:] + [p for p in params if p.kind is p.KEYWORD_ONLY]
        # The names of (transport, request): never filled from a query.
        self.taken = frozenset(p.name for p in positional[:2])
        self.func = func
        self.any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = frozenset(p.name for p in rest if p.kind is not p.POSITIONAL_ONLY)
        for name in path_params:
            if name not in self.names and not self.any_keyword:
                raise TypeError(f"{where}: the handler has no parameter for path parameter {name!r}")
        self.required = frozenset(
            p.name for p in rest if p.default is p.empty and p.name not in path_params)

    def arguments(self, query: str, params: Optional[dict[str, Any]]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if query:
            try:
                fields = parse_qsl(query, keep_blank_values=True, errors="replace",
                                   max_num_fields=_MAX_QUERY_FIELDS)
            except ValueError:
                raise HttpError(400, f"more than {_MAX_QUERY_FIELDS} query fields") from None
            names = self.names
            any_keyword = self.any_keyword
            for name, value in fields:
                if name in kwargs:
                    continue
                if name in names or any_keyword and name.isidentifier() and name not in self.taken:
                    kwargs[name] = value
        if params:
            kwargs.update(params)
        if self.required:
            missing = self.required.difference(kwargs)
            if missing:
                raise HttpError(400, f"missing query parameter {sorted(missing)[0]!r}")
        return kwargs


class _Route:
    """One path (exact, pattern or prefix) and its handler per method."""

    __slots__ = ("path", "handlers", "allow", "regex", "converters", "params")

    def __init__(self, path: str) -> None:
        self.path = path
        self.handlers: dict[str, _Handler] = {}
        self.allow = ""
        self.regex: Optional[re.Pattern[str]] = None
        self.converters: dict[str, Callable[[str], Any]] = {}
        self.params: list[str] = []
        pattern = []
        last = 0
        for match in _PARAM.finditer(path):
            name, kind = match.group(1), match.group(2) or "str"
            if name in self.params:
                raise ValueError(f"route {path!r} names parameter {name!r} twice")
            regex, convert = _CONVERTERS[kind]
            pattern.append(re.escape(path[last:match.start()]))
            pattern.append(f"(?P<{name}>{regex})")
            if convert is not None:
                self.converters[name] = convert
            self.params.append(name)
            last = match.end()
        if self.params:
            pattern.append(re.escape(path[last:]))
            self.regex = re.compile("".join(pattern))
        elif "{" in path or "}" in path:
            raise ValueError(f"route {path!r}: parameters look like {{name}}, {{name:int}} "
                             "or {name:path}")

    def add(self, methods: Sequence[str], handler: _Handler) -> None:
        for method in methods:
            if method in self.handlers:
                raise ValueError(f"{method} {self.path} has a handler already")
            self.handlers[method] = handler
        allowed = set(self.handlers)
        if "GET" in allowed:
            allowed.add("HEAD")
        allowed.add("OPTIONS")
        allowed.discard(_ALL_METHODS)
        self.allow = ", ".join(sorted(allowed))

    def match(self, path: str) -> Optional[dict[str, Any]]:
        assert self.regex is not None
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        params: dict[str, Any] = found.groupdict()
        for name, convert in self.converters.items():
            params[name] = convert(params[name])
        return params


def _methods(methods: Union[str, Iterable[str]]) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    result = []
    for method in methods:
        method = method.upper()
        if method != _ALL_METHODS and not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Z]+", method):
            raise ValueError(f"invalid method {method!r}")
        result.append(method)
    if not result:
        raise ValueError("a route needs at least one method")
    return result


def route(path: Union[str, Callable[..., Any], None] = None, *,
          methods: Union[str, Iterable[str]] = ("GET",), prefix: bool = False) -> Any:
    """Mark a method of an :class:`HttpServer` subclass as a route.

    ``@route`` alone serves ``/name`` (``/`` for a method named ``index``)
    with GET (and HEAD); ``@route("/path/{param}", methods=["GET", "POST"])``
    names the path and methods; ``methods="*"`` takes any method;
    ``prefix=True`` serves every path under ``path``. Stack several to serve
    one method at several paths.
    """
    if callable(path):
        return route()(path)

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        routes = func.__dict__.setdefault("__parallio_routes__", [])
        name = func.__name__
        routes.append((path if path is not None else ("/" if name == "index" else "/" + name),
                       _methods(methods), prefix))
        return func

    return mark


class _AsProtocol:
    """``__parallio_protocol__`` of HttpServer: on an instance, its protocol
    class; on a subclass (registered as a class), that of a new instance."""

    def __get__(self, instance: Optional["HttpServer"], owner: type) -> Callable[[], type]:
        if instance is None:
            return lambda: owner().protocol_class
        return lambda: instance.protocol_class


class HttpServer:
    """A route table and static mounts, served by every worker; see the
    module docstring for routing and handler rules.

    ``limits`` bounds requests (:class:`~parallio.http.parser.Limits`: head,
    header count, body size), ``header_timeout`` is the seconds a client
    gets to send a request head once it started (then 408), ``idle_timeout``
    the seconds a kept-alive connection may stay silent, and a client may
    leave a response unread, before it is closed; ``body_budget`` bounds the
    bytes all unfinished requests of a worker may buffer together (past it,
    503). ``forwarded_allow_ips`` (addresses, networks or ``*``; default
    127.0.0.1) are the proxies whose ``X-Forwarded-*``/``Forwarded`` fields
    set ``request.client``, ``.scheme`` and ``.host``. Each can also be set
    as a class attribute of a subclass.
    """

    limits: Limits = HttpProtocol.limits
    header_timeout: float = HttpProtocol.header_timeout
    idle_timeout: float = HttpProtocol.idle_timeout
    body_budget: int = HttpProtocol.body_budget
    forwarded_allow_ips: Union[str, Sequence[str], TrustedAddresses] = \
        HttpProtocol.forwarded_allow_ips

    __parallio_protocol__ = _AsProtocol()

    def __init__(self, *, limits: Optional[Limits] = None, header_timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None, body_budget: Optional[int] = None,
                 forwarded_allow_ips: Union[str, Sequence[str], None] = None) -> None:
        if body_budget is not None:
            self.body_budget = body_budget
        if limits is not None:
            self.limits = limits
        if header_timeout is not None:
            self.header_timeout = header_timeout
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
        if forwarded_allow_ips is not None:
            self.forwarded_allow_ips = forwarded_allow_ips
        self.forwarded_allow_ips = TrustedAddresses.of(self.forwarded_allow_ips)
        if self.header_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._module = _caller_module(self)
        self._exact: dict[str, _Route] = {}
        self._patterns: list[_Route] = []
        self._prefixes: list[_Route] = []
        self._protocol: Optional[type] = None
        # By name, so that a subclass's @route method replaces its base's.
        routed: dict[str, list] = {}
        for klass in reversed(type(self).__mro__):
            for name, value in vars(klass).items():
                routes = getattr(value, "__parallio_routes__", None)
                if routes:
                    routed[name] = routes
        for name, routes in routed.items():
            for path, methods, prefix in routes:
                self._add(path, methods, prefix, getattr(self, name))

    def route(self, path: str, *, methods: Union[str, Iterable[str]] = ("GET",),
              prefix: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: serve ``path`` with the decorated function; see
        :func:`route` for ``methods`` and ``prefix``."""
        method_list = _methods(methods)

        def add(func: Callable[..., Any]) -> Callable[..., Any]:
            self._add(path, method_list, prefix, func)
            return func

        return add

    def static(self, prefix: str, root: str, *, listing: bool = False,
               index: Sequence[str] = ("index.html", "index.htm")) -> None:
        """Serve the files under directory ``root`` at ``prefix`` (GET and
        HEAD): sendfile, byte ranges, conditional requests, an index file
        per directory and, with ``listing``, generated directory listings.
        See :class:`parallio.http.static.StaticFiles`."""
        files = StaticFiles(root, prefix, listing=listing, index=index)
        self._add(files.prefix, ["GET"], True, files)

    def _add(self, path: str, methods: list[str], prefix: bool,
             func: Callable[..., Any]) -> None:
        if self._protocol is not None:
            raise RuntimeError("routes cannot be added once the server is serving")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a route path starts with '/': {path!r}")
        if prefix:
            route_ = next((r for r in self._prefixes
                           if r.path.rstrip("/") == path.rstrip("/")), None)
            if route_ is None:
                route_ = _Route(path)
                if route_.params:
                    raise ValueError(f"prefix route {path!r} cannot have parameters")
                self._prefixes.append(route_)
                self._prefixes.sort(key=lambda r: len(r.path), reverse=True)
        else:
            route_ = self._exact.get(path) or next(
                (r for r in self._patterns if r.path == path), None)
            if route_ is None:
                route_ = _Route(path)
                if route_.params:
                    self._patterns.append(route_)
                else:
                    self._exact[path] = route_
        where = f"route {path!r}"
        route_.add(methods, _Handler(func, route_.params, where))

    def _find(self, path: str) -> tuple[Optional[_Route], Optional[dict[str, Any]]]:
        for route_ in self._patterns:
            params = route_.match(path)
            if params is not None:
                return route_, params
        for route_ in self._prefixes:
            # "/files/" and "/files" both serve "/files" and all under "/files/".
            base = route_.path.rstrip("/")
            if path.startswith(base) and (len(path) == len(base) or path[len(base)] == "/"):
                return route_, None
        return None, None

    @property
    def protocol_class(self) -> type:
        """The protocol class serving this server (made once)."""
        if self._protocol is None:
            self._protocol = type(
                f"HttpServer[{type(self).__qualname__}]", (_ServerProtocol,),
                {"app": self, "limits": self.limits, "header_timeout": self.header_timeout,
                 "idle_timeout": self.idle_timeout, "body_budget": self.body_budget,
                 "forwarded_allow_ips": self.forwarded_allow_ips,
                 "__module__": __name__, "__slots__": ()})
        return self._protocol

    def __parallio_ref__(self) -> ObjectRef:
        return module_level_ref(self, self._module, type(self).__name__)


class _ServerProtocol(StreamingHttpProtocol):
    """Serves one connection for the HttpServer in ``app``."""

    __slots__ = ()

    app: HttpServer

    def respond(self, transport: "Transport", request: Request) -> bool:
        app = self.app
        path = request.path
        method = request.method
        route_ = app._exact.get(path)
        params = None
        if route_ is None:
            route_, params = app._find(path)
            if route_ is None:
                return self._error(transport, request, 404, "Not Found")
        handler = route_.handlers.get(method)
        if handler is None:
            handler = route_.handlers.get("GET") if method == "HEAD" else None
            if handler is None:
                handler = route_.handlers.get(_ALL_METHODS)
                if handler is None:
                    allow = [("Allow", route_.allow)]
                    if method == "OPTIONS":
                        head = render_head(204, server_headers(allow),
                                           keep_alive=request.keep_alive,
                                           request_version=request.http_version)
                        transport.send(head)
                        if self.access is not None:
                            self.note(head)
                        return request.keep_alive
                    return self._error(transport, request, 405, "Method Not Allowed", allow)
        try:
            if request.query or params or handler.required:
                result = handler.func(transport, request, **handler.arguments(request.query, params))
            else:
                result = handler.func(transport, request)
        except HttpError as error:
            return self._error(transport, request, error.status, error.reason)
        if result is None:
            return request.keep_alive
        if result.__class__ is Response:
            return self._send_response(transport, request, result)
        response = render_result(result, request)
        transport.send(response)
        if self.access is not None:
            self.note(response)
        return request.keep_alive

    def _error(self, transport: "Transport", request: Request, status: int, reason: str,
               headers: HeaderPairs = ()) -> bool:
        extra = server_headers(headers) if headers else SERVER_HEADER
        response = simple_response(
            status, f"{status} {reason}\n".encode(), keep_alive=request.keep_alive,
            extra_headers=extra, request_version=request.http_version,
            head_only=request.method == "HEAD")
        transport.send(response)
        if self.access is not None:
            self.note(response)
        return request.keep_alive

    def _send_response(self, transport: "Transport", request: Request, response: Response) -> bool:
        body = response.body
        head_only = request.method == "HEAD"
        if isinstance(body, bytes):
            data = simple_response(
                response.status, body, response.content_type, request.keep_alive,
                response.headers, request_version=request.http_version, head_only=head_only)
            transport.send(data)
            if self.access is not None:
                self.note(data)
            return request.keep_alive
        headers = PreparedHeaders(response.headers + b"Content-Type: " + response.content_type
                                  + b"\r\n")
        status = response.status

        def make_head(ended: bool) -> StreamHead:
            return status, headers, None, True

        stream = self.open_stream(transport, request, make_head)
        if head_only:
            # The head alone; the body is never produced.
            stream.close_iterable = getattr(body, "close", None)
            stream.start(ended=False)
            self._pump()
        else:
            self.run_stream(stream, body)
        return request.keep_alive


class FileServer:
    """A server of one directory tree at ``/``: what ``python -m parallio
    http-server`` runs. Unlike an :class:`HttpServer
    <parallio.http.server.HttpServer>` with routes, it is sent to workers
    by value (root and options), so it needs no module-level name::

        parallio.register(parallio.server("0.0.0.0", 8000), FileServer("/srv/www"))
    """

    def __init__(self, root: str | os.PathLike, *, listing: bool = False,
                 index: Sequence[str] = ("index.html", "index.htm"),
                 header_timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None,
                 forwarded_allow_ips: Union[str, Sequence[str], None] = None) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"{os.fsdecode(root)!r} is not a directory")
        self.listing = listing
        self.index = tuple(index)
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.forwarded_allow_ips = forwarded_allow_ips

    def __getstate__(self) -> dict:
        return {name: value for name, value in vars(self).items() if name != "_protocol"}

    def __parallio_ref__(self) -> ObjectRef:
        return ObjectRef(f"{__name__}:{type(self).__qualname__}", self, by_value=True)

    def __parallio_protocol__(self) -> type:
        protocol = self.__dict__.get("_protocol")
        if protocol is None:
            server = HttpServer(header_timeout=self.header_timeout, idle_timeout=self.idle_timeout,
                                forwarded_allow_ips=self.forwarded_allow_ips)
            server.static("/", self.root, listing=self.listing, index=self.index)
            protocol = self._protocol = server.protocol_class
        return protocol
