"""One connection: drives a protocol instance's callbacks from its engine.

The transport owns the policy the engines leave out: the ordered send queue
(one send in flight, partial sends resumed), the high/low water marks that
pause reading from a peer that does not read, gather-sends, file sends, and
what happens when a callback raises.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _context
from .protocol import LineSplitter, ProtocolSpec, to_buffers

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("parallio")

_local = _context.local

#: Reading pauses while more than this many bytes wait to be sent...
HIGH_WATER = 256 * 1024
#: ...and resumes once fewer than this many do.
LOW_WATER = 64 * 1024
# Files go out in slices so one large file cannot monopolise a worker's turn.
_SENDFILE_SLICE = 1 << 20
# A queued file slice costs no memory but holds a descriptor; count it so a
# client pipelining many file requests is paused too.
_FILE_SEND_WEIGHT = 16 * 1024
# A lingering close reads and discards the peer's data for at most this
# long, and at most this much, before closing anyway.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024


class _Send:
    """One queued piece of output."""

    __slots__ = ("data", "file", "offset", "remaining", "send_id")

    def __init__(self, data: Any, send_id: int, file: Any = None,
                 offset: int = 0, remaining: int = 0) -> None:
        self.data = data  # a buffer, a list of buffers, or None for a file
        self.file = file  # an open binary file object for file sends
        self.offset = offset
        self.remaining = remaining
        self.send_id = send_id  # non-zero on the last piece of a send


class Transport:
    """The connection a protocol callback is running for.

    Passed as the first argument of every callback and also returned by
    :func:`parallio.transport` inside one.
    """

    __slots__ = (
        "worker", "engine", "fd", "protocol", "_spec", "_queue", "_queued_bytes",
        "_inflight", "_reading", "_paused", "_closing", "_closed", "_eof",
        "_send_seq", "_lines", "_peer", "_local", "_high_water", "_low_water",
        "_data_received", "_send_complete", "is_client", "http_header", "_linger",
        "__weakref__",
    )

    def __init__(self, worker: "Worker", fd: int, spec: ProtocolSpec,
                 is_client: bool = False) -> None:
        self.worker = worker
        self.engine = worker.engine
        self.fd = fd
        self.is_client = is_client
        self._spec = spec
        self._queue: deque[_Send] = deque()
        self._queued_bytes = 0
        self._inflight = False
        self._reading = False
        self._paused = False
        self._closing = False
        self._closed = False
        self._eof = False
        self._linger: Any = None  # [timer, bytes discarded] while lingering
        self._send_seq = 0
        self._lines = LineSplitter(spec.max_line) if spec.lines_mode else None
        self._peer: Any = None
        self._local: Any = None
        self._high_water = HIGH_WATER
        self._low_water = LOW_WATER
        self.protocol: Any = None
        self._data_received: Any = None
        self._send_complete: Any = None
        #: The request being answered, in the HTTP fast path (PyParallel's name).
        self.http_header: Any = None

    # -- life cycle -------------------------------------------------------
    def start(self) -> None:
        """Make the protocol instance and run its opening callbacks."""
        _local.transport = self
        try:
            self.protocol = protocol = self._spec.cls()
            self._send_complete = getattr(protocol, "send_complete", None)
            if self._lines is not None:
                self._data_received = protocol.lines_received
            else:
                self._data_received = getattr(protocol, "data_received", None)
            made = getattr(protocol, "connection_made", None)
            if made is not None:
                self._send_result(made(self))
            initial = self._spec.initial_bytes
            if initial is not None:
                self._send_result(initial() if callable(initial) else initial)
        except Exception:
            self._callback_failed("connection_made")
        if not self._closing and not self._closed:
            self._reading = True
            self.engine.start_reading(self.fd, self._on_data)

    def _on_data(self, data: Any) -> None:
        if data.__class__ is not bytes or not data:
            self._on_end(data)
            return
        worker = self.worker
        worker.bytes_in += len(data)
        worker.callbacks += 1
        _local.transport = self
        if self._closing:
            return
        try:
            next_bytes = self._spec.next_bytes
            if next_bytes is not None:
                result = next_bytes() if callable(next_bytes) else next_bytes
            elif self._lines is not None:
                for line in self._lines.feed(data):
                    self._send_result(self._data_received(self, line))
                    if self._closing:
                        break
                return
            elif self._data_received is not None:
                result = self._data_received(self, data)
            else:
                return
            if result is not None:
                self._send_result(result)
        except Exception:
            self._callback_failed("data_received")

    def _on_end(self, result: Any) -> None:
        """The peer closed its side (b"") or the read failed (-errno)."""
        self._reading = False
        if result.__class__ is int:
            self._abort(OSError(-result, os.strerror(-result)))
            return
        self._eof = True
        if self._lines is not None and not self._closing:
            rest = self._lines.feed(b"\n")
            _local.transport = self
            try:
                for line in rest:
                    if line:
                        self._send_result(self._data_received(self, line))
            except Exception:
                self._callback_failed("lines_received")
        self.close()

    def close(self) -> None:
        """Close once everything queued has been sent."""
        if self._closed:
            return
        self._closing = True
        if self._reading:
            self._reading = False
            self.engine.stop_reading(self.fd)
        if not self._inflight and not self._queue:
            # Not at once: a callback that closes may still return what to
            # send last ("transport.close(); return b'bye'").
            self.worker.call_later(0, self._finish_if_drained)

    def _finish_if_drained(self) -> None:
        if not self._closed and not self._inflight and not self._queue:
            self._close_gracefully()

    def _close_gracefully(self) -> None:
        """Everything queued is sent: close, lingering first if the peer may
        still be sending.

        Closing a socket with unread input makes the kernel answer with a
        reset, and a reset can destroy the peer's copy of our last response
        before it is read (a 400 behind pipelined requests, the end of a
        stream). So the write side is shut first (FIN), and what the peer
        still sends is read and discarded until it closes too, for a short
        while at most: Apache's "lingering close".
        """
        if self._eof or self._linger is not None:
            self._finish(None)
            return
        sock = socket.socket(fileno=self.fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(None)
            return
        finally:
            sock.detach()
        self._linger = [self.worker.call_later(LINGER_SECONDS, self._finish, None), 0]
        self.engine.start_reading(self.fd, self._discard_while_lingering)

    def _discard_while_lingering(self, data: Any) -> None:
        if data.__class__ is bytes and data:
            self._linger[1] += len(data)
            if self._linger[1] <= LINGER_MAX_BYTES:
                return
        self._finish(None)

    def abort(self) -> None:
        """Close now, dropping whatever has not been sent."""
        self._abort(None)

    def _abort(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._closing = True
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._linger is not None:
            self._linger[0].cancel()
        self._reading = False
        self.engine.close(self.fd)
        for item in self._queue:
            if item.file is not None:
                item.file.close()
        self._queue.clear()
        self._queued_bytes = 0
        lost = getattr(self.protocol, "connection_lost", None)
        if lost is not None:
            _local.transport = self
            try:
                lost(self, exc)
            except Exception:
                log.exception("connection_lost of %s failed", self._spec.cls.__qualname__)
        self.worker.connection_closed(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        return self._closing

    # -- addresses --------------------------------------------------------
    def _socket_call(self, name: str) -> Any:
        sock = socket.socket(fileno=self.fd)
        try:
            return getattr(sock, name)()
        finally:
            sock.detach()

    @property
    def peer(self) -> Any:
        """The remote address, as :meth:`socket.socket.getpeername` gives it."""
        if self._peer is None:
            self._peer = self._socket_call("getpeername")
        return self._peer

    @property
    def local(self) -> Any:
        """The local address, as :meth:`socket.socket.getsockname` gives it."""
        if self._local is None:
            self._local = self._socket_call("getsockname")
        return self._local

    @property
    def ip(self) -> str:
        return self.peer[0]

    @property
    def port(self) -> int:
        return self.peer[1]

    # -- sending ----------------------------------------------------------
    def send(self, data: Any) -> int:
        """Queue ``data`` (anything a callback may return) after what is
        already queued. Returns its send id, as ``send_complete`` will get."""
        if self._closing:
            raise ConnectionError("the transport is closing")
        return self._send_result(data)

    def set_write_buffer_limits(self, high: int = HIGH_WATER, low: int | None = None) -> None:
        """Bytes queued above ``high`` pause reading until they drop below
        ``low`` (a quarter of ``high`` by default)."""
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low <= high")
        self._high_water, self._low_water = high, low

    @property
    def write_buffer_size(self) -> int:
        return self._queued_bytes

    def sendfile(self, before: Any, path: str | os.PathLike, after: Any) -> int:
        """Send ``before``, the whole file at ``path``, then ``after``, the
        file going from the page cache to the socket without passing through
        Python. Raises :class:`OSError` at once if the file cannot be opened."""
        file = open(path, "rb")
        size = os.fstat(file.fileno()).st_size
        return self._queue_file(before, file, 0, size, after)

    def sendfile_ranged(self, before: Any, path: str | os.PathLike, after: Any,
                        offset: int, nbytes: int) -> int:
        """Like :meth:`sendfile`, for ``nbytes`` bytes from ``offset`` (any
        size: there is no 2 GB limit)."""
        if offset < 0 or nbytes < 0:
            raise ValueError("offset and nbytes must be >= 0")
        file = open(path, "rb")
        size = os.fstat(file.fileno()).st_size
        if offset + nbytes > size:
            file.close()
            raise ValueError(f"range {offset}+{nbytes} is past the end of {path} ({size} bytes)")
        return self._queue_file(before, file, offset, nbytes, after)

    def _queue_file(self, before: Any, file: Any, offset: int, nbytes: int, after: Any) -> int:
        if self._closing:
            file.close()
            raise ConnectionError("the transport is closing")
        self._send_seq += 1
        send_id = self._send_seq
        queue = self._queue
        if before is not None:
            self._append(to_buffers(before), 0)
        queue.append(_Send(None, 0 if after is not None else send_id, file, offset, nbytes))
        self._queued_bytes += _FILE_SEND_WEIGHT
        if after is not None:
            self._append(to_buffers(after), send_id)
        self._after_queueing()
        return send_id

    def _send_result(self, result: Any) -> int:
        if result is None:
            return 0
        self._send_seq += 1
        send_id = self._send_seq
        if result.__class__ is bytes and not self._inflight and not self._queue:
            # The common case, kept short: nothing waiting, send at once.
            self._queue.append(_Send(result, send_id))
            self._queued_bytes += len(result)
            if result:
                self._inflight = True
                self.engine.send(self.fd, result, self._on_sent)
                if self._queued_bytes > self._high_water:
                    self._pause_reading()
            else:
                self._pump()
            return send_id
        self._append(to_buffers(result), send_id)
        self._after_queueing()
        return send_id

    def _append(self, buffers: Any, send_id: int) -> None:
        if buffers.__class__ is list:
            size = sum(map(len, buffers))
            if not size:
                buffers = b""
        else:
            size = len(buffers)
        self._queue.append(_Send(buffers, send_id))
        self._queued_bytes += size

    def _after_queueing(self) -> None:
        if not self._inflight:
            self._pump()
        if self._queued_bytes > self._high_water:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self._reading:
            self._paused = True
            self._reading = False
            self.engine.stop_reading(self.fd)

    def _pump(self) -> None:
        queue = self._queue
        while queue:
            item = queue[0]
            data = item.data
            if item.file is not None:
                if item.remaining:
                    self._inflight = True
                    self.engine.sendfile(self.fd, item.file.fileno(), item.offset,
                                         min(item.remaining, _SENDFILE_SLICE), self._on_sent)
                    return
            elif data.__class__ is list:
                self._inflight = True
                self.engine.sendmsg(self.fd, data, self._on_sent)
                return
            elif data:
                self._inflight = True
                self.engine.send(self.fd, data, self._on_sent)
                return
            # An empty piece: complete it at once.
            queue.popleft()
            self._piece_done(item)
            if self._closed:
                return
        if self._closing:
            self._close_gracefully()

    def _on_sent(self, sent: int) -> None:
        self._inflight = False
        if self._closed:
            return
        if sent < 0:
            self._abort(OSError(-sent, os.strerror(-sent)))
            return
        item = self._queue[0]
        data = item.data
        if item.file is not None:
            if sent == 0:
                self._abort(OSError(errno.EIO, "file ended before its range was sent"))
                return
            item.offset += sent
            item.remaining -= sent
            done = not item.remaining
            self.worker.bytes_out += sent
        else:
            self.worker.bytes_out += sent
            self._queued_bytes -= sent
            if data.__class__ is list:
                item.data = _trim_buffers(data, sent)
                done = not item.data
            elif sent == len(data):
                done = True
            else:
                item.data = memoryview(data)[sent:]
                done = False
        if done:
            self._queue.popleft()
            if item.file is not None or (item.send_id and self._send_complete is not None):
                self._piece_done(item)
                if self._closed:
                    return
        if self._paused and self._queued_bytes < self._low_water and not self._closing:
            self._paused = False
            self._reading = True
            self.engine.start_reading(self.fd, self._on_data)
        if self._inflight:
            return
        if self._queue:
            self._pump()
        elif self._closing:
            self._close_gracefully()

    def _piece_done(self, item: _Send) -> None:
        if item.file is not None:
            item.file.close()
            self._queued_bytes -= _FILE_SEND_WEIGHT
        if item.send_id and self._send_complete is not None:
            _local.transport = self
            try:
                self._send_result(self._send_complete(self, item.send_id))
            except Exception:
                self._callback_failed("send_complete")

    # -- failures ---------------------------------------------------------
    def _callback_failed(self, syscall: str) -> None:
        exc_info = sys.exc_info()
        handler = getattr(self.protocol, "exception_handler", None)
        if handler is not None:
            try:
                self._send_result(handler(self, syscall, exc_info))
                return
            except Exception:
                log.exception("exception_handler of %s failed", self._spec.cls.__qualname__)
                self.abort()
                return
        log.error("%s.%s failed; closing the connection",
                  self._spec.cls.__qualname__, syscall, exc_info=exc_info)
        self.worker.callback_errors += 1
        self.close()


def _trim_buffers(buffers: list, sent: int) -> list:
    """What remains of a gather-send after ``sent`` bytes went out."""
    for index, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            rest = buffers[index:]
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= size
    return []
