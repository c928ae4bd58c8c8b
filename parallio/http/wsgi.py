"""WSGI (PEP 3333) applications on every worker, on a pool of threads.

:class:`WsgiServer` wraps an application, named by import path or given as
an object, and is registered like a protocol class::

    parallio.register(parallio.server("0.0.0.0", 8000), WsgiServer("myproject.wsgi:application"))

or from the command line: ``python -m parallio wsgi myproject.wsgi:application``.

Applications run on the worker's :class:`~parallio.threadpool.ThreadPool`
(``threads`` per worker), never on its loop: a handler that blocks holds
one thread, and the worker's other connections go on being served. Bodies
stream both ways between the loop and the thread, bounded:

* ``wsgi.input`` is fed as the body arrives (Content-Length or chunked,
  decoded and bounded by the parser): ``read()`` waits for what is not
  there yet, and the socket is not read while more than 256 KiB wait for
  the application. Chunked bodies have no ``CONTENT_LENGTH``; read them to
  the end (``wsgi.input_terminated`` is True). ``100 Continue`` goes out
  when the application first reads the body of a request that asked.
* the response's pieces, from ``write()`` and the iterable, go to the loop
  as they are produced; a thread that gets more than 256 KiB ahead of the
  client waits until the client has taken most of it.
* ``wsgi.file_wrapper`` responses over a regular file go out with sendfile
  (encrypted in slices under TLS), the thread free at once.

What the server guarantees the application:

* A full environ: CGI variables (``PATH_INFO`` is the percent-decoded path
  as latin-1 text, per PEP 3333), ``HTTP_*`` for every header (repeats
  joined with ``, ``, cookies with ``; ``; names with ``_`` are dropped so
  that ``X-User`` cannot be forged as ``X_User``), ``REMOTE_ADDR``/
  ``REMOTE_PORT``, ``REQUEST_URI`` (the raw target), the ``wsgi.*`` keys.
  From a trusted proxy (``forwarded_allow_ips``), ``X-Forwarded-For/-Proto/
  -Host`` or ``Forwarded`` set ``REMOTE_ADDR``, ``wsgi.url_scheme``,
  ``HTTP_HOST`` and ``SERVER_NAME``/``SERVER_PORT``. Over TLS:
  ``wsgi.url_scheme`` "https", ``HTTPS`` "on" and mod_ssl's ``SSL_PROTOCOL``,
  ``SSL_CIPHER``, ``SSL_TLS_SNI``, ``SSL_CLIENT_VERIFY`` (``SUCCESS`` or
  ``NONE``), ``SSL_CLIENT_S_DN``, ``SSL_CLIENT_I_DN`` (RFC 4514),
  ``SSL_CLIENT_M_SERIAL``, ``SSL_CLIENT_V_START``, ``SSL_CLIENT_V_END`` and
  ``SSL_CLIENT_CERT`` (PEM).
* ``start_response`` checks its arguments (a bad status or header is an
  error, hence a 500), honours ``exc_info`` (replaces the headers if none
  were sent; re-raises if they were) and returns ``write()``.
* The head goes out with the first non-empty piece of the body, or when
  the iterable ends. The body is framed by the application's
  Content-Length (a body longer or shorter than it is a 500 if nothing was
  sent yet, else a cut connection), or computed when the iterable is a
  one-item list, or chunked for HTTP/1.1, or delimited by closing the
  connection for HTTP/1.0.
* The iterable's ``close()`` is always called, on the thread that ran the
  application: after the body, after an error, when the client
  disconnects, and after a HEAD request's head (whose body is then no
  longer produced).
* An exception before the head is sent is a 500 and a close; after it, the
  connection is cut. Either way it is logged with its traceback.
* With ``request_timeout``, a response not produced in time is answered
  with 503 (or cut, if it had begun) and the connection closed; the
  application's thread is abandoned to finish on its own (its output is
  dropped) and a fresh thread takes its place in the pool.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Union
from urllib.parse import unquote_to_bytes

from .._ref import ObjectRef
from ..edge import EdgeTransport
from ..stream import HIGH_WATER, LOW_WATER
from ..threadpool import DEFAULT_THREADS, Job, ThreadPool
from ..trust import TrustedAddresses
from ..worker import current_worker
from .connection import HttpProtocol, connection_scheme
from .forwarded import FORWARDING_FIELDS, resolve
from .parser import EndOfMessage, HttpError, Limits, Request, RequestParser
from .response import (CONTINUE_RESPONSE, SERVER_HEADER, PreparedHeaders, server_headers,
                       simple_response)
from .server import HOLD_LIMIT, BodyStream, StreamHead, module_level_ref

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["WsgiServer", "FileWrapper"]

log = logging.getLogger("parallio.http")

# Hop-by-hop fields (RFC 9110 §7.6.1) belong to the server; PEP 3333 forbids
# applications to send them. Connection is the exception: "close" is honoured.
_HOP_BY_HOP = frozenset(("keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade"))
_STATUS_DIGITS = frozenset("0123456789")
# An application thread may be this many bytes ahead of the client...
_OUTPUT_AHEAD = HIGH_WATER
# ...and the socket is not read while this many wait in wsgi.input, until
# the application has read it down to the low mark.
_INPUT_HIGH = HIGH_WATER
_INPUT_LOW = LOW_WATER
# Markers in an exchange's output.
_END = object()
_FAILED = object()


class _Stopped(Exception):
    """Raised in an application's thread once its output is no longer
    wanted (the client left, the deadline passed, a HEAD's head was sent)."""


class FileWrapper:
    """``wsgi.file_wrapper``: a file-like object's blocks as an iterable,
    sent with sendfile when it wraps a regular file (PEP 3333 §optional)."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Any:
        read = self.filelike.read
        while True:
            block = read(self.blksize)
            if not block:
                return
            yield block

    def regular_file(self) -> Optional[tuple[int, int]]:
        """The descriptor and the current position when the wrapped file is
        a regular file, else None (a pipe, a BytesIO: iterated instead)."""
        try:
            fd = self.filelike.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return fd, self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None


class _Input:
    """``wsgi.input``: the request body, fed by the loop as it arrives and
    read by the application's thread."""

    __slots__ = ("_exchange", "_buffer", "_ended", "_error", "_cond", "paused", "waiting",
                 "_read_any")

    def __init__(self, exchange: "_Exchange") -> None:
        # Weak: the exchange holds this input, and refcounting alone frees
        # both (the application's thread holds the exchange while it reads).
        self._exchange = weakref.ref(exchange)
        self._buffer = bytearray()
        self._ended = False
        self._error: Optional[BaseException] = None
        self._cond = exchange.cond
        #: The loop stopped reading the socket until this is read down.
        self.paused = False
        #: The application waits in read() for what has not arrived.
        self.waiting = False
        self._read_any = False

    # -- the loop's side
    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def put(self, data: bytes) -> None:
        with self._cond:
            self._buffer += data
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if not self._ended:
                self._error = error
            self._cond.notify_all()

    # -- the application's side
    def _wait(self, enough: Callable[[], bool]) -> None:
        """Wait until ``enough()`` or the body ended (under the lock)."""
        if not self._read_any:
            self._read_any = True
            exchange = self._exchange()
            if exchange is not None:
                exchange.first_read()
        while not enough() and not self._ended:
            if self._error is not None:
                raise self._error
            if self.paused:
                # More was asked for than the high water mark lets in (a
                # whole-body read()): the body comes on, as far as the
                # application wants it.
                self.paused = False
                exchange = self._exchange()
                if exchange is not None:
                    exchange.input_drained()
            self.waiting = True
            self._cond.wait()
            self.waiting = False

    def _taken(self, size: int) -> bytes:
        buffer = self._buffer
        data = bytes(buffer[:size])
        del buffer[:size]
        if self.paused and len(buffer) < _INPUT_LOW:
            self.paused = False
            exchange = self._exchange()
            if exchange is not None:
                exchange.input_drained()
        return data

    def read(self, size: Optional[int] = -1) -> bytes:
        with self._cond:
            if size is None or size < 0:
                self._wait(lambda: False)
                return self._taken(len(self._buffer))
            self._wait(lambda: len(self._buffer) >= size)
            return self._taken(min(size, len(self._buffer)))

    def readline(self, size: Optional[int] = -1) -> bytes:
        with self._cond:
            limit = size if size is not None and size >= 0 else None
            self._wait(lambda: self._buffer.find(b"\n") >= 0
                       or limit is not None and len(self._buffer) >= limit)
            end = self._buffer.find(b"\n")
            end = len(self._buffer) if end < 0 else end + 1
            return self._taken(end if limit is None else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Any:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class _Exchange(Job):
    """One request: the application's call on a pool thread, and the
    hand-over of its output to the loop (through :meth:`ThreadPool.call_soon_threadsafe`)."""

    __slots__ = ("protocol", "pool", "request", "environ", "input", "cond", "status", "headers",
                 "length", "close", "committed", "outbox", "outbox_bytes", "backlog", "posted",
                 "stopped", "stream", "finished", "timer", "flushed_file", "__weakref__")

    def __init__(self, protocol: "_WsgiProtocol", request: Request, environ: dict[str, Any]) -> None:
        super().__init__()
        self.protocol = protocol
        self.pool = protocol.pool
        self.request = request
        self.environ = environ
        self.cond = threading.Condition(threading.Lock())
        self.input = environ["wsgi.input"] = _Input(self)
        # start_response's state, set on the application's thread.
        self.status: Optional[int] = None
        self.headers: Optional[PreparedHeaders] = None
        self.length: Optional[int] = None
        self.close = False
        self.committed = False  # the application has handed over body bytes
        # Output on its way to the loop: pieces, a file, _END or _FAILED.
        self.outbox: list[Any] = []
        self.outbox_bytes = 0
        self.backlog = 0  # what the transport still held when the loop last looked
        self.posted = False
        #: The loop wants no more output (set under the lock).
        self.stopped = False
        # The loop's side.
        self.stream: Optional[BodyStream] = None
        self.finished = False
        self.timer: Any = None
        self.flushed_file = False

    # -- on the application's thread ----------------------------------------
    def run(self) -> None:
        request = self.request
        result: Any = None
        try:
            result = self.protocol.application(self.environ, self.start_response)
            if type(result) is FileWrapper:
                found = result.regular_file()
                if found is not None:
                    self._hand_over_file(*found)
                    return
            if type(result) in (list, tuple):
                pieces = list(result)
                if self.length is None and len(pieces) == 1 and type(pieces[0]) is bytes:
                    # PEP 3333 lets the server compute the length of a one-item body.
                    self.length = len(pieces[0])
                for piece in pieces:
                    self._check_piece(piece)
                if self.status is None:
                    raise AssertionError("the application returned without calling "
                                         "start_response()")
                self._post(pieces, _END)
                return
            for piece in result:
                self._check_piece(piece)
                if piece:
                    self._post([piece])
            if self.status is None:
                raise AssertionError("the application returned without calling start_response()")
            self._post((), _END)
        except _Stopped:
            pass
        except Exception:
            if not self.stopped:
                log.exception("the application failed on %s %s", request.method, request.target)
                self._post((), _FAILED)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("close() of the response to %s %s failed",
                                  request.method, request.target)

    def _check_piece(self, piece: Any) -> None:
        if type(piece) is not bytes:
            raise TypeError(f"a WSGI body piece must be bytes, not {type(piece).__name__}")
        if piece and self.status is None:
            raise AssertionError("the application returned a body without calling "
                                 "start_response()")

    def start_response(self, status: str, response_headers: list, exc_info: Any = None
                       ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.committed:
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
        if data:
            self._post([data])

    def _post(self, pieces: Sequence[Any], marker: Any = None) -> None:
        """Hand output to the loop; then wait while the client is too far
        behind. :class:`_Stopped` once the loop wants no more."""
        size = sum(len(piece) for piece in pieces)
        with self.cond:
            if self.stopped:
                raise _Stopped
            if size:
                self.committed = True
            self.outbox.extend(pieces)
            if marker is not None:
                self.outbox.append(marker)
            self.outbox_bytes += size
            post = not self.posted
            self.posted = True
        if post:
            self.pool.call_soon_threadsafe(self.protocol.take_output, self)
        if marker is None:
            with self.cond:
                while self.outbox_bytes + self.backlog > _OUTPUT_AHEAD and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    raise _Stopped

    def _hand_over_file(self, fd: int, position: int) -> None:
        size = os.fstat(fd).st_size - position
        if self.status is None:
            raise AssertionError("the application returned a body without calling start_response()")
        if self.length is not None and self.length > size:
            raise ValueError(f"the file has {size} bytes left, fewer than the Content-Length "
                             f"{self.length}")
        count = size if self.length is None else self.length
        self.length = count
        # The transport gets a descriptor of its own; the application's file
        # is closed by the wrapper's close(), as PEP 3333 has it.
        duplicate = open(os.dup(fd), "rb")
        try:
            self._post((), (duplicate, position, count))
        except BaseException:
            duplicate.close()
            raise

    def first_read(self) -> None:
        """The application began reading the body (under the lock)."""
        self.pool.call_soon_threadsafe(self.protocol.body_wanted, self)

    def input_drained(self) -> None:
        """The application read the body down (under the lock)."""
        self.pool.call_soon_threadsafe(self.protocol.resume_input, self)

    # -- on the loop's thread ---------------------------------------------------
    def take(self) -> list[Any]:
        with self.cond:
            items, self.outbox = self.outbox, []
            self.outbox_bytes = 0
            self.posted = False
        return items

    def room(self, backlog: int) -> None:
        """The transport holds ``backlog`` unsent bytes: let the thread on."""
        with self.cond:
            self.backlog = backlog
            self.cond.notify_all()

    def stop(self, error: BaseException) -> None:
        """No more output is wanted; the application's reads fail with ``error``."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.input.fail(error)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def make_head(self, ended: bool) -> StreamHead:
        assert self.status is not None and self.headers is not None
        return self.status, self.headers, self.length, not self.close


def _head_maker(exchange: _Exchange) -> Callable[[bool], StreamHead]:
    """``exchange.make_head`` without the reference from its stream back
    to it: no cycle per request."""
    reference = weakref.ref(exchange)

    def make_head(ended: bool) -> StreamHead:
        owner = reference()
        assert owner is not None  # the protocol holds it while its stream runs
        return owner.make_head(ended)

    return make_head


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


class _WsgiProtocol(HttpProtocol):
    """Serves one connection with the application of ``server``: requests
    are parsed on the loop and answered on the pool, one at a time
    (pipelined ones wait their turn)."""

    __slots__ = ("application", "base_environ", "pool", "exchange")

    server: "WsgiServer"

    def connection_made(self, transport: "Transport") -> None:
        HttpProtocol.connection_made(self, transport)
        self.parser = RequestParser(self.limits, stream_bodies=True)
        self.application = self.server.application
        self.exchange: Optional[_Exchange] = None
        try:
            self.base_environ = self.server.base_environ(transport)
        except OSError:
            transport.abort()  # the client left before its address could be read
            return
        self.pool = transport.loop.extension(ThreadPool)
        self.pool.ensure(self.server.threads)

    def connection_lost(self, transport: "Transport", exc: BaseException | None) -> None:
        HttpProtocol.connection_lost(self, transport, exc)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.stop(ConnectionError("the client closed the connection"))

    def _busy(self) -> bool:
        # A request is on the pool, or part of one is in the parser: a
        # drain lets it finish.
        return self.exchange is not None or self.parser.in_progress

    # -- input ----------------------------------------------------------------
    def data_received(self, transport: "Transport", data: bytes) -> None:
        self.active = True
        try:
            self.parser.feed(data)
            self._advance()
        except HttpError as error:
            self._broken_request(error)

    def _advance(self) -> None:
        """Turn what the parser holds into requests and body pieces, as far
        as the request in progress lets."""
        parser = self.parser
        transport = self.transport
        while not transport.closing:
            exchange = self.exchange
            if exchange is not None and not exchange.finished:
                request_input = exchange.input
                if request_input.ended:
                    # The next request waits for this one's response.
                    if parser.buffered > HOLD_LIMIT:
                        transport.pause_reading()
                    return
                if request_input.buffered > _INPUT_HIGH:
                    with exchange.cond:
                        # Not while the application waits for more than
                        # is there: it asked for it.
                        wanted = request_input.waiting
                        request_input.paused = not wanted
                    if not wanted:
                        transport.pause_reading()
                        return
            event = parser.next_event()
            if event is None:
                return
            if event.__class__ is Request:
                self._begin(event)
            elif exchange is None:
                continue  # the body of a request answered without it (CONNECT)
            elif event.__class__ is EndOfMessage:
                exchange.input.end()
                if exchange.finished and not self._retire(exchange):
                    return
            elif not exchange.finished:
                exchange.input.put(event)  # type: ignore[arg-type]
            # else: a body the response did not wait for, discarded

    def _begin(self, request: Request) -> None:
        transport = self.transport
        self.served += 1
        request.origin = self
        transport.loop.counters.requests += 1
        if self.draining:
            if self.over_limit:
                self.refuse(transport, 503, "Service Unavailable")
                return
            request.keep_alive = False  # its response says Connection: close
        if request.method == "CONNECT":
            # A tunnel is no request an application can answer: its body
            # would be the tunnelled stream.
            response = simple_response(
                501, b"501 Not Implemented\n", keep_alive=False, extra_headers=SERVER_HEADER,
                request_version=request.http_version)
            transport.send(response)
            if self.access is not None:
                self.note(response)
            transport.close()
            return
        if self.access is not None:
            self.started = time.time()
        environ = self.base_environ.copy()
        _fill_environ(environ, request, self)
        exchange = self.exchange = _Exchange(self, request, environ)
        exchange.stream = BodyStream(transport, request, _head_maker(exchange))
        timeout = self.server.request_timeout
        if timeout is not None:
            exchange.timer = transport.loop.call_later(timeout, self._timed_out, exchange)
        self.pool.submit(exchange)

    def body_wanted(self, exchange: _Exchange) -> None:
        if exchange is self.exchange and self.parser.wants_continue \
                and not self.transport.closing and not exchange.stream.flushed:  # type: ignore[union-attr]
            self.transport.send(CONTINUE_RESPONSE)
            self.parser.continue_sent()

    def resume_input(self, exchange: _Exchange) -> None:
        if exchange is self.exchange and not self.transport.closing:
            self._read_on()

    def _read_on(self) -> None:
        """Read again, and serve what the parser holds."""
        self.transport.resume_reading()
        try:
            self._advance()
        except HttpError as error:
            self._broken_request(error)

    def _broken_request(self, error: HttpError) -> None:
        exchange = self.exchange
        if exchange is None or exchange.stream is None or not exchange.stream.flushed:
            if exchange is not None:
                exchange.stop(ConnectionError(f"the request body is malformed: {error.reason}"))
            self.refuse(self.transport, error.status, error.reason)
        else:
            exchange.stop(ConnectionError(f"the request body is malformed: {error.reason}"))
            self.transport.abort()

    # -- output -----------------------------------------------------------------
    def take_output(self, exchange: _Exchange) -> None:
        """What the application's thread produced: frame it and send it."""
        items = exchange.take()
        if exchange is not self.exchange or exchange.finished:
            return
        stream = exchange.stream
        assert stream is not None
        transport = self.transport
        try:
            for item in items:
                if item is _END:
                    stream.end()
                elif item is _FAILED:
                    self._response_failed(exchange)
                    return
                elif item.__class__ is tuple:
                    self._send_file(exchange, *item)
                else:
                    stream.put(item)
                    if stream.discard and stream.started:
                        stream.end()  # HEAD, 204, 304: the head is all there is
                if stream.finished:
                    break
            if transport.closing:
                exchange.stop(ConnectionError("the connection is closing"))
                return
            stream.flush()
        except Exception:
            log.exception("the response to %s %s failed", exchange.request.method,
                          exchange.request.target)
            self._response_failed(exchange)
            return
        if stream.finished:
            self._done(exchange)
            return
        backlog = transport.write_buffer_size
        exchange.room(backlog)
        if backlog > _OUTPUT_AHEAD - LOW_WATER:
            transport.when_drained(lambda: self._drained(exchange))

    def _send_file(self, exchange: _Exchange, file: Any, offset: int, count: int) -> None:
        stream = exchange.stream
        assert stream is not None
        if not stream.started:
            stream.start(ended=not count)
        if not stream.discard and count:
            stream.flush()
            self.transport.sendfile_ranged(None, file, None, offset, count)
            stream.body_bytes += count
        else:
            file.close()
        stream.remaining = 0
        stream.end()

    def _drained(self, exchange: _Exchange) -> None:
        if exchange is self.exchange and not exchange.finished:
            exchange.room(self.transport.write_buffer_size)

    def _response_failed(self, exchange: _Exchange) -> None:
        self.transport.loop.counters.callback_errors += 1
        exchange.finished = True
        exchange.stop(ConnectionError("the response failed"))
        self.exchange = None
        if not self.transport.closing:
            self._end_with(exchange, 500, b"Internal Server Error\n")

    def _timed_out(self, exchange: _Exchange) -> None:
        exchange.timer = None
        if exchange is not self.exchange or exchange.finished:
            return
        request = exchange.request
        log.warning("%s %s: no response within the request timeout (%s s); its thread is "
                    "abandoned", request.method, request.target, self.server.request_timeout)
        exchange.finished = True
        exchange.stop(TimeoutError("the request timed out"))
        self.pool.abandon(exchange)
        self.exchange = None
        self._end_with(exchange, 503, b"503 Service Unavailable: the request timed out\n")

    def _end_with(self, exchange: _Exchange, status: int, body: bytes) -> None:
        """End a response that cannot go on: answer ``status`` and close, or,
        if part of the response is out already, cut the connection (only
        that tells the client it is incomplete)."""
        transport = self.transport
        stream = exchange.stream
        if stream is not None and stream.flushed:
            transport.abort()
            return
        if self.access is not None:
            self._log(exchange, status, len(body))
        transport.send(simple_response(
            status, body, keep_alive=False, extra_headers=SERVER_HEADER,
            request_version=exchange.request.http_version))
        transport.close()

    def _log(self, exchange: _Exchange, status: int, body_bytes: int) -> None:
        assert self.access is not None
        self.access.record(self.transport.peer, exchange.request, status, body_bytes, self.started)

    def _done(self, exchange: _Exchange) -> None:
        """The response is complete; the request's body may still be coming."""
        if self.access is not None:
            stream = exchange.stream
            assert stream is not None
            self._log(exchange, stream.status, stream.body_bytes)
        exchange.finished = True
        exchange.stop(ConnectionError("the response is complete"))
        if exchange.input.ended:
            if not self._retire(exchange):
                return
        elif self.parser.wants_continue or not exchange.stream.keep_alive:  # type: ignore[union-attr]
            # Its body was never asked for: the client may not send it.
            self.exchange = None
            self.transport.close()
            return
        self._read_on()  # what follows, after discarding the rest of this body

    def _retire(self, exchange: _Exchange) -> bool:
        """The request and its response are both complete: whether the
        connection goes on to the next."""
        self.exchange = None
        stream = exchange.stream
        if (stream is None or not stream.keep_alive or not exchange.request.keep_alive
                or self.draining):
            self.transport.close()
            return False
        self.transport.resume_reading()
        return True

    # -- timeouts -----------------------------------------------------------------
    def check_timeouts(self, elapsed: float) -> None:
        transport = self.transport
        exchange = self.exchange
        if transport.closed:
            return
        if exchange is None:
            HttpProtocol.check_timeouts(self, elapsed)
            return
        # The application is at work: only a client that holds it up (a
        # stalled body, a response not taken) can time out here; how long
        # the work itself takes is the request timeout's business.
        sent = transport.bytes_sent
        stalled = exchange.input.waiting or transport.write_buffer_size
        if self.active or sent != self.sent_seen or not stalled:
            self.active = False
            self.sent_seen = sent
            self.quiet = 0.0
            return
        self.quiet += elapsed
        if self.quiet > self.idle_timeout:
            log.info("closing a connection whose client stalled for %s s", self.idle_timeout)
            exchange.stop(TimeoutError("the client stalled"))
            self.exchange = None
            transport.abort()


def _fill_environ(environ: dict[str, Any], request: Request, protocol: _WsgiProtocol) -> None:
    raw_path = request.raw_path
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = (unquote_to_bytes(raw_path).decode("latin-1")
                            if raw_path.startswith("/") else "")
    environ["QUERY_STRING"] = request.query
    environ["REQUEST_URI"] = request.target
    major, minor = request.http_version
    environ["SERVER_PROTOCOL"] = f"HTTP/{major}.{minor}"
    headers = request.headers
    length = headers.get("content-length")
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    forwarding = None
    for name, value in headers:
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length" or "_" in name:
            continue
        else:
            if name in FORWARDING_FIELDS:
                forwarding = forwarding or []
                forwarding.append((name, value))
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
    if request.target[:1] != "/" and request.authority:
        # An absolute-form target names the host, whatever Host says
        # (RFC 9112 §3.2.2).
        environ["HTTP_HOST"] = request.authority
    if forwarding:
        _apply_forwarding(environ, forwarding, protocol)


def _apply_forwarding(environ: dict[str, Any], fields: list[tuple[str, str]],
                      protocol: _WsgiProtocol) -> None:
    transport = protocol.transport
    scheme = environ["wsgi.url_scheme"]
    origin = resolve(fields, transport.peer, scheme, protocol.forwarded_allow_ips)
    if origin.client is not transport.peer and isinstance(origin.client, tuple):
        environ["REMOTE_ADDR"], port = origin.client
        environ["REMOTE_PORT"] = str(port)
    if origin.scheme != scheme:
        environ["wsgi.url_scheme"] = origin.scheme
        if origin.scheme == "https":
            environ["HTTPS"] = "on"
        else:
            environ.pop("HTTPS", None)
    if origin.host is not None:
        environ["HTTP_HOST"] = origin.host
        name, port = _split_host(origin.host)
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port or ("443" if origin.scheme == "https" else "80")


def _split_host(host: str) -> tuple[str, str]:
    """``host[:port]`` (an IPv6 literal in brackets) into name and port."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    name, colon, port = host.partition(":")
    return name, port


def _tls_environ(transport: "Transport") -> dict[str, Any]:
    """mod_ssl's environ keys for a TLS connection (empty for plain TCP)."""
    if not isinstance(transport, EdgeTransport) or not transport.is_tls:
        return {}
    cipher = transport.cipher
    environ: dict[str, Any] = {"HTTPS": "on", "SSL_PROTOCOL": transport.tls_version or "",
                               "SSL_CIPHER": cipher[0] if cipher else ""}
    if transport.server_hostname:
        environ["SSL_TLS_SNI"] = transport.server_hostname
    # Here, not at the top: a worker without TLS does not load the ssl module.
    import ssl

    from ..tls import rfc4514_name

    cert = transport.peercert
    if cert:
        environ["SSL_CLIENT_VERIFY"] = "SUCCESS"
        environ["SSL_CLIENT_S_DN"] = rfc4514_name(cert.get("subject"))
        environ["SSL_CLIENT_I_DN"] = rfc4514_name(cert.get("issuer"))
        environ["SSL_CLIENT_M_SERIAL"] = cert.get("serialNumber", "")
        environ["SSL_CLIENT_V_START"] = cert.get("notBefore", "")
        environ["SSL_CLIENT_V_END"] = cert.get("notAfter", "")
        der = transport.peercert_der
        if der:
            environ["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
    else:
        environ["SSL_CLIENT_VERIFY"] = "NONE"
    return environ


class WsgiServer:
    """Serves the WSGI application ``app`` (an import path ``module:name``
    or the callable itself); see the module docstring.

    ``threads`` is the size of each worker's pool (the application runs
    that many requests at once per worker); ``request_timeout`` (seconds,
    None for no limit) bounds how long a response may take;
    ``forwarded_allow_ips`` are the proxies whose forwarding fields are
    believed (default 127.0.0.1).

    Given a path, the server is sent to workers by value and each worker
    imports the application itself; ``python -m parallio wsgi`` works this
    way, and ``parallel="auto"`` picks processes over isolated interpreters
    when the application's module cannot be imported in one (and logs why).
    Given a callable, create the WsgiServer at module level, where workers
    find it by import path.
    """

    def __init__(self, app: str | Callable[..., Iterable[bytes]], *,
                 limits: Optional[Limits] = None, header_timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None, threads: int = DEFAULT_THREADS,
                 request_timeout: Optional[float] = None,
                 forwarded_allow_ips: Union[str, Sequence[str], None] = None) -> None:
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
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, not {request_timeout!r}")
        self.limits = limits if limits is not None else HttpProtocol.limits
        self.header_timeout = header_timeout if header_timeout is not None else HttpProtocol.header_timeout
        self.idle_timeout = idle_timeout if idle_timeout is not None else HttpProtocol.idle_timeout
        self.threads = threads
        self.request_timeout = request_timeout
        self.forwarded_allow_ips = TrustedAddresses.of(
            forwarded_allow_ips if forwarded_allow_ips is not None
            else HttpProtocol.forwarded_allow_ips)
        self._module = sys._getframe(1).f_globals.get("__name__")
        self._protocol: Optional[type] = None

    @property
    def application(self) -> Callable[..., Iterable[bytes]]:
        """The application, imported on first use."""
        return self._application if self._application is not None else self.load()

    def load(self) -> Callable[..., Iterable[bytes]]:
        """Import the application (if given by path); a failure raises here."""
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
        environ = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": str(local[0]) if isinstance(local, tuple) else "",
            "SERVER_PORT": str(local[1]) if isinstance(local, tuple) else "",
            "REMOTE_ADDR": str(peer[0]) if isinstance(peer, tuple) else "",
            "REMOTE_PORT": str(peer[1]) if isinstance(peer, tuple) else "",
            "SERVER_SOFTWARE": "parallio",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": connection_scheme(transport),
            "wsgi.errors": sys.stderr,
            # The pool's threads share the application object (and, in the
            # threads host, the workers do); the other hosts' workers each
            # have their own copy, as separate processes do.
            "wsgi.multithread": self.threads > 1 or host == "threads",
            "wsgi.multiprocess": host != "threads",
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        environ.update(_tls_environ(transport))
        return environ

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
            self.load()  # now: a failure stops the worker's start, loudly
            self._protocol = type(
                "WsgiServer", (_WsgiProtocol,),
                {"server": self, "limits": self.limits, "header_timeout": self.header_timeout,
                 "idle_timeout": self.idle_timeout,
                 "forwarded_allow_ips": self.forwarded_allow_ips, "__module__": __name__})
        return self._protocol
