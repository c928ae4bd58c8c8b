"""asyncio socket transports on a parallio engine's completions.

A :class:`SocketTransport` is what asyncio's ``create_connection``,
``create_server``, ``connect_accepted_socket`` and their Unix variants hand
to protocols on :class:`~parallio.loop.events.EventLoop`. Its output policy
is :class:`parallio.stream.Stream`'s (ordered send queue, partial sends
resumed, pieces gathered into one send, file slices, water marks): the
transport owns a :class:`_SocketStream` whose hooks forward to the asyncio
protocol. Composition, not inheritance, because ``asyncio.BaseTransport``
has ``__slots__ = ('_extra',)`` and a class cannot lay out both.

What asyncio's semantics add on top of the stream:

- writes made during one turn of the loop are held and sent together when
  the turn's callbacks have run (uvloop batches the same way), so a header
  and a body written separately leave in one send;
- over the high water mark the protocol's ``pause_writing()`` is called,
  back at or under the low one ``resume_writing()`` (64 KiB / 16 KiB by
  default, as asyncio's);
- ``close()`` sends what is queued and closes, without parallio's
  lingering close; ``write_eof()`` shuts the write side once the queue is
  sent; ``abort()`` drops it;
- ``connection_made`` and ``connection_lost`` are called from the loop's
  ready queue, never from inside the call that caused them, as asyncio's
  transports do; ``data_received`` / ``buffer_updated`` come straight from
  the engine's completions.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
import warnings
from asyncio import constants, futures, protocols, transports, trsock
from asyncio.log import logger
from typing import Any, Callable, Protocol

from ..stream import Loop, Stream

_BYTES_LIKE = (bytes, bytearray, memoryview)


class TransportLoop(Loop, Protocol):
    """What a transport needs of its event loop beyond a stream's needs:
    asyncio's loop API and the end-of-turn flush of held writes."""

    connections_total: int
    _transports: Any

    def cork(self, stream: Stream) -> None: ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle: ...

    def create_future(self) -> asyncio.Future[Any]: ...

    def get_debug(self) -> bool: ...

    def is_closed(self) -> bool: ...

    def call_exception_handler(self, context: dict[str, Any]) -> None: ...


if sys.version_info < (3, 13):
    # asyncio's Server counted its transports before 3.13; it holds them since.
    def attach_to_server(server: Any, transport: Any) -> None:
        server._attach()

    def detach_from_server(server: Any, transport: Any) -> None:
        server._detach()
else:
    def attach_to_server(server: Any, transport: Any) -> None:
        server._attach(transport)

    def detach_from_server(server: Any, transport: Any) -> None:
        server._detach(transport)


class _SocketStream(Stream):
    """The stream of one :class:`SocketTransport`: its hooks forward."""

    __slots__ = ("transport",)
    lingers = False

    def __init__(self, loop: TransportLoop, handle: Any, transport: "SocketTransport") -> None:
        super().__init__(loop, handle)
        self.transport = transport

    def _start_reading(self) -> None:
        if not self._reading and not self.closing:
            self._reading = True
            # Chunks go to the transport straight from the engine.
            self.engine.start_reading(self.handle, self.transport._on_data)

    def _over_high_water(self) -> None:
        self.transport._maybe_pause_protocol()

    def _under_low_water(self) -> None:
        self.transport._maybe_resume_protocol()

    def _piece_sent(self, send_id: int) -> None:
        self.transport._file_sent(send_id)

    def _lost(self, exc: BaseException | None) -> None:
        self.transport._stream_lost(exc)

    def cork(self) -> None:
        """Hold writes until the loop's turn ends (see the module docstring)."""
        self._corked = True
        self.loop.cork(self)  # type: ignore[attr-defined]

    def uncork(self) -> None:
        if self._corked:
            self._uncork()


class _BorrowedFile:
    """A caller's file lent to the stream for one ``sendfile``: the stream
    closes what it sends from; the caller's file stays open."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        pass


class SocketTransport(transports._FlowControlMixin):
    """A connected stream socket on the loop's engine; see the module
    docstring. Made by the loop, not by hand."""

    __slots__ = (
        "_sock", "_sock_fd", "_protocol", "_protocol_connected", "_server", "_stream",
        "_closing", "_paused", "_eof", "_conn_lost", "_buffered", "_sendfile", "_counters",
        "__weakref__",
    )

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # What this class uses of _FlowControlMixin's internals (typeshed does
    # not declare them).
    _loop: Any
    _extra: dict[str, Any]
    _protocol_paused: bool
    _high_water: int
    _low_water: int
    _maybe_pause_protocol: Callable[[], None]
    _maybe_resume_protocol: Callable[[], None]

    def __init__(self, loop: TransportLoop, sock: socket.socket, protocol: asyncio.BaseProtocol,
                 waiter: asyncio.Future[Any] | None = None, extra: dict[str, Any] | None = None,
                 server: asyncio.Server | None = None) -> None:
        self._stream = _SocketStream(loop, loop.engine.open(sock.fileno()), self)
        self._counters = loop.counters
        super().__init__(extra, loop)  # type: ignore[arg-type]  # asyncio's API, not its type
        extra = self._extra
        extra["socket"] = trsock.TransportSocket(sock)
        try:
            extra["sockname"] = sock.getsockname()
        except OSError:
            extra["sockname"] = None
        if "peername" not in extra:
            try:
                extra["peername"] = sock.getpeername()
            except OSError:
                extra["peername"] = None
        self._sock: socket.socket | None = sock
        self._sock_fd = sock.fileno()
        self._protocol: Any = None
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._closing = False
        self._paused = False
        self._eof = False
        self._conn_lost = 0
        #: (future, file, offset, count, bytes_sent where the file starts) of
        #: the sendfile() in progress.
        self._sendfile: tuple[asyncio.Future[int], Any, int, int, int] | None = None
        if server is not None:
            attach_to_server(server, self)
        loop._transports[self._sock_fd] = self
        loop.connections_total += 1
        if sock.family in (socket.AF_INET, socket.AF_INET6) and server is None:
            # Accepted sockets inherit it from their listener.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has been called.
        loop.call_soon(self._start)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled,  # type: ignore[attr-defined]
                           waiter, None)

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None:
            info.append("read=" + ("polling" if self._stream._reading else "idle"))
            info.append(f"write=<bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_sock", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            loop = self._loop
            if loop is not None and not loop.is_closed():
                self._stream.abort()
            elif self._sock is not None:
                self._sock.close()
                self._sock = None

    # -- the protocol -------------------------------------------------------------------
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        if getattr(self, "_protocol", None) is not None and self._protocol_paused:
            # pause_writing() went to the protocol replaced now (start_tls):
            # resume_writing() must not go to the new one, which was never
            # paused; it hears of the buffer at its next write.
            self._protocol_paused = False
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- reading ----------------------------------------------------------------------
    def _start(self) -> None:
        if not self._paused and not self._closing:
            self._stream._start_reading()

    def is_reading(self) -> bool:
        return not self._closing and not self._paused

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True
        self._stream._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._stream._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _on_data(self, data: bytes | int) -> None:
        """What the engine read: a chunk, b"" at the end, or -errno."""
        if data.__class__ is bytes and data and not self._conn_lost:
            self._counters.bytes_in += len(data)
            if self._buffered:
                self._buffer_updated(data)
                return
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        elif self._conn_lost:
            return
        elif data.__class__ is bytes:
            self._on_eof()
        else:
            error = -data  # type: ignore[operator]
            self._fatal_error(OSError(error, os.strerror(error)),
                              "Fatal read error on socket transport")

    def _buffer_updated(self, data: bytes) -> None:
        protocol = self._protocol
        view = memoryview(data)
        while view:
            try:
                buffer = protocol.get_buffer(len(view))
                available = len(buffer)
                if not available:
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            taken = min(available, len(view))
            buffer[:taken] = view[:taken]
            view = view[taken:]
            try:
                protocol.buffer_updated(taken)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            if self._conn_lost:
                return

    def _on_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- writing ----------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data.__class__ is not bytes:
            if not isinstance(data, _BYTES_LIKE):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            # Kept until sent: a copy, as the caller may reuse its buffer.
            data = bytes(data)
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._sendfile is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        stream = self._stream
        if not stream._corked:
            stream.cork()
        stream._write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self._eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        self._stream.shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._stream._queued_bytes

    def _set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        super()._set_write_buffer_limits(high, low)  # type: ignore[misc]
        self._stream._high_water = self._high_water
        self._stream._low_water = self._low_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._set_write_buffer_limits(high, low)
        # The stream's marks were set without it noticing: let it look.
        self._stream.set_write_buffer_limits(self._high_water, self._low_water)

    # -- files --------------------------------------------------------------------------
    async def sendfile(self, file: Any, offset: int, count: int | None) -> int:
        """``loop.sendfile()`` on this transport: the file's bytes leave
        through the engine's sendfile, after what is queued already."""
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation) as err:
            raise asyncio.SendfileNotAvailableError("not a regular file") from err
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise asyncio.SendfileNotAvailableError("not a regular file") from None
        available = max(0, size - offset)
        count = available if count is None else min(count, available)
        if not count:
            return 0
        if self._conn_lost or self._closing:
            raise ConnectionError("Connection is closed")
        future: asyncio.Future[int] = self._loop.create_future()
        stream = self._stream
        # The file's bytes are those sent after everything queued before it.
        self._sendfile = (future, file, offset, count, stream.bytes_sent + stream._queued_bytes)
        stream._write_file(_BorrowedFile(fileno), offset, count, send_id=1)
        try:
            return await future
        finally:
            self._sendfile = None

    def _file_sent(self, send_id: int) -> None:
        pending = self._sendfile
        if pending is None:
            return
        future, file, offset, count, _start = pending
        file.seek(offset + count)
        if not future.done():
            future.set_result(count)

    # -- closing ------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        stream = self._stream
        if stream._queued_bytes:
            stream.close()       # once what is queued has been sent
        else:
            self._conn_lost += 1
            stream.abort()       # nothing to send: at once

    def abort(self) -> None:
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._closing = True
        self._conn_lost += 1
        self._stream._abort(exc)

    def _stream_lost(self, exc: BaseException | None) -> None:
        """The stream closed the descriptor (through the engine)."""
        self._closing = True
        sock = self._sock
        if sock is not None:
            sock.detach()   # the engine closed it; the number may be reused
        if not self._conn_lost:
            self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            pending = self._sendfile
            if pending is not None and not pending[0].done():
                future, file, offset, count, start = pending
                file.seek(offset + max(0, min(count, self._stream.bytes_sent - start)))
                future.set_exception(ConnectionError("Connection is closed by peer"))
            self._sock = None
            self._protocol = None
            server = self._server
            if server is not None:
                detach_from_server(server, self)
                self._server = None

