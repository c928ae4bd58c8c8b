"""One connection running a PyParallel protocol class.

:class:`Transport` is a :class:`~parallio.stream.Stream` (send queue, water
marks, lingering close) that makes one protocol instance per connection and
drives its callbacks: what a callback returns is sent, ``lines_mode`` cuts
lines, ``send_complete`` reports finished sends, an exception goes to the
protocol's ``exception_handler`` or closes the connection. A peer that does
not read stops being read from once more than the high water mark waits to
be sent, so a callback returning data can never make memory grow without
bound.

Writes made while a callback runs are corked: they go out as one send when
it returns, so a burst of pipelined requests is answered with one system
call.

This module is callable: ``parallio.transport()`` returns the connection
whose callback is running (PyParallel's spelling), and ``import
parallio.transport`` still names the module.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from typing import Any, BinaryIO, Callable, Protocol, TypeVar

from . import _context, _sockets
from .engine.base import Handle
from .protocol import LineSplitter, ProtocolSpec, to_buffers
from .stream import HIGH_WATER, LOW_WATER, Counters, Loop, Stream

__all__ = ["Transport", "ProtocolLoop", "NotInCallback", "current", "HIGH_WATER", "LOW_WATER"]

log = logging.getLogger("parallio")


class NotInCallback(RuntimeError):
    """:func:`parallio.transport` was called outside a protocol callback."""


_Extension = TypeVar("_Extension")


class ProtocolLoop(Loop, Protocol):
    """A :class:`~parallio.stream.Loop` that also says which transport's
    callback is running (for :func:`current`) and keeps per-loop state for
    the protocols above (:meth:`extension`)."""

    current_transport: "Transport | None"

    def extension(self, kind: Callable[[Any], _Extension]) -> _Extension:
        """This loop's instance of ``kind`` (made with the loop on first use)."""


class Transport(Stream):
    """The connection a protocol callback is running for.

    Passed as the first argument of every callback and also returned by
    :func:`parallio.transport` inside one.
    """

    __slots__ = ("protocol", "_spec", "_data_received", "_send_complete", "_lines",
                 "_send_seq", "_peer", "_local", "_counters", "_paused")

    loop: ProtocolLoop

    def __init__(self, loop: ProtocolLoop, handle: Handle, spec: ProtocolSpec) -> None:
        super().__init__(loop, handle)
        self._spec = spec
        self._counters: Counters = loop.counters
        self._send_seq = 0
        self._lines = LineSplitter(spec.max_line) if spec.lines_mode else None
        self._peer: Any = None
        self._local: Any = None
        self.protocol: Any = None
        self._data_received: Callable[..., Any] | None = None
        self._send_complete: Callable[..., Any] | None = None
        self._paused = False

    @property
    def fd(self) -> int:
        return self.handle.fd

    # -- life cycle -------------------------------------------------------
    def start(self) -> None:
        """Make the protocol instance and run its opening callbacks."""
        loop = self.loop
        loop.current_transport = self
        self._corked = True
        try:
            self.protocol = protocol = self._spec.cls()
            self._send_complete = getattr(protocol, "send_complete", None)
            # What each chunk is given to, decided once.
            if self._spec.next_bytes is not None:
                self._data_received = self._next_bytes
            elif self._lines is not None:
                self._data_received = self._lines_received
            else:
                self._data_received = getattr(protocol, "data_received", None) or self._ignore
            made = getattr(protocol, "connection_made", None)
            if made is not None:
                self._send_result(made(self))
            initial = self._spec.initial_bytes
            if initial is not None:
                self._send_result(initial() if callable(initial) else initial)
        except Exception:
            self._callback_failed("connection_made")
        finally:
            loop.current_transport = None
        self._uncork()
        if not self.closing and not self.closed:
            self._start_reading()

    def _on_data(self, data: bytes | int) -> None:
        if data.__class__ is not bytes or not data:
            self._on_end(data)
            return
        counters = self._counters
        counters.bytes_in += len(data)
        counters.callbacks += 1
        if self.closing:
            return
        loop = self.loop
        loop.current_transport = self
        self._corked = True
        try:
            result = self._data_received(self, data)  # type: ignore[misc]
            if result is not None:
                self._send_result(result)
        except Exception:
            self._callback_failed("data_received")
        finally:
            loop.current_transport = None
        self._uncork()

    def _next_bytes(self, transport: Transport, data: bytes) -> Any:
        """What ``next_bytes_to_send`` protocols get for any input."""
        next_bytes = self._spec.next_bytes
        return next_bytes() if callable(next_bytes) else next_bytes

    def _lines_received(self, transport: Transport, data: bytes) -> None:
        """``lines_mode`` protocols: one call per complete line."""
        assert self._lines is not None
        for line in self._lines.feed(data):
            self._send_result(self.protocol.lines_received(self, line))
            if self.closing:
                break

    def _ignore(self, transport: Transport, data: bytes) -> None:
        """Protocols without data_received: input is read and dropped."""

    def _on_end(self, result: bytes | int) -> None:
        """The peer closed its side (b"") or the read failed (-errno)."""
        self._reading = False
        if result.__class__ is int:
            error = -result
            self._abort(OSError(error, os.strerror(error)))
            return
        self._eof = True
        if self._lines is not None and not self.closing:
            self.loop.current_transport = self
            self._corked = True
            try:
                for line in self._lines.feed(b"\n"):
                    if line:
                        self._send_result(self.protocol.lines_received(self, line))
            except Exception:
                self._callback_failed("lines_received")
            finally:
                self.loop.current_transport = None
            self._uncork()
        self.close()

    def _lost(self, exc: BaseException | None) -> None:
        lost = getattr(self.protocol, "connection_lost", None)
        if lost is not None:
            self.loop.current_transport = self
            try:
                lost(self, exc)
            except Exception:
                log.exception("connection_lost of %s failed", self._spec.cls.__qualname__)
            finally:
                self.loop.current_transport = None
        # The protocol instance (and whatever request state it holds) goes
        # with the connection, not when this object is collected.
        self.protocol = None
        self._data_received = self._send_complete = None

    def drain(self) -> None:
        """The server is stopping: a protocol with a ``connection_draining``
        callback decides how this connection ends (HTTP answers what is in
        progress, then closes); others are closed once queued sends are done."""
        draining = getattr(self.protocol, "connection_draining", None)
        if draining is None or self.closing:
            self.close()
            return
        self.loop.current_transport = self
        self._corked = True
        try:
            self._send_result(draining(self))
        except Exception:
            self._callback_failed("connection_draining")
        finally:
            self.loop.current_transport = None
        self._uncork()

    # -- backpressure: a peer that does not read is not read from --------
    def _over_high_water(self) -> None:
        self._stop_reading()

    def _under_low_water(self) -> None:
        if not self.closing and not self._paused:
            self._start_reading()

    def pause_reading(self) -> None:
        """Stop taking data from the peer until :meth:`resume_reading`:
        backpressure from a protocol whose consumer is behind (the kernel's
        buffers fill, then the peer's sends wait)."""
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading` (unless output is over
        the high water mark: then once it drains)."""
        self._paused = False
        if not self.closing and not self._over_water:
            self._start_reading()

    # -- addresses --------------------------------------------------------
    @property
    def peer(self) -> Any:
        """The remote address, as :meth:`socket.socket.getpeername` gives it."""
        if self._peer is None:
            with _sockets.borrowed(self.handle.fd) as sock:
                self._peer = sock.getpeername()
        return self._peer

    @property
    def local(self) -> Any:
        """The local address, as :meth:`socket.socket.getsockname` gives it."""
        if self._local is None:
            with _sockets.borrowed(self.handle.fd) as sock:
                self._local = sock.getsockname()
        return self._local

    @property
    def ip(self) -> str:
        return str(self.peer[0])

    @property
    def port(self) -> int:
        return int(self.peer[1])

    # -- sending ----------------------------------------------------------
    def send(self, data: Any) -> int:
        """Queue ``data`` (anything a callback may return) after what is
        already queued. Returns its send id, as ``send_complete`` will get."""
        if self.closing:
            raise ConnectionError("the transport is closing")
        if data.__class__ is bytes and data and self._send_complete is None:
            # The common case, spared the conversions of _send_result.
            self._send_seq += 1
            self._write(data)
            return self._send_seq
        return self._send_result(data)

    def sendfile(self, before: Any, path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
                 after: Any) -> int:
        """Send ``before``, the whole file at ``path``, then ``after``, the
        file going from the page cache to the socket without passing through
        Python. Raises :class:`OSError` at once if the file cannot be opened."""
        file = open(path, "rb")
        size = os.fstat(file.fileno()).st_size
        return self._send_file(before, file, 0, size, after)

    def sendfile_ranged(self, before: Any,
                        path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | BinaryIO,
                        after: Any, offset: int, nbytes: int) -> int:
        """Like :meth:`sendfile`, for ``nbytes`` bytes from ``offset`` (any
        size: there is no 2 GB limit). ``path`` may also be a binary file
        open on a regular file, which the transport then owns and closes."""
        if offset < 0 or nbytes < 0:
            raise ValueError("offset and nbytes must be >= 0")
        file = open(path, "rb") if isinstance(path, (str, bytes, os.PathLike)) else path
        size = os.fstat(file.fileno()).st_size
        if offset + nbytes > size:
            file.close()
            name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else file.name
            raise ValueError(f"range {offset}+{nbytes} is past the end of {name} ({size} bytes)")
        return self._send_file(before, file, offset, nbytes, after)

    def _send_file(self, before: Any, file: Any, offset: int, nbytes: int, after: Any) -> int:
        if self.closing:
            file.close()
            raise ConnectionError("the transport is closing")
        self._send_seq += 1
        send_id = self._send_seq
        tracked = send_id if self._send_complete is not None else 0
        if before is not None:
            self._write_buffers(to_buffers(before), 0)
        self._write_file(file, offset, nbytes, tracked if after is None else 0)
        if after is not None:
            self._write_buffers(to_buffers(after), tracked)
        return send_id

    def _send_result(self, result: Any) -> int:
        """Send what a callback returned; its send id (0 for None)."""
        if result is None:
            return 0
        self._send_seq += 1
        send_id = self._send_seq
        tracked = send_id if self._send_complete is not None else 0
        if result.__class__ is bytes:
            if result:
                self._write(result, tracked)
            elif tracked:
                self._report_sent(tracked)
            return send_id
        self._write_buffers(to_buffers(result), tracked)
        return send_id

    def _write_buffers(self, buffers: Any, send_id: int) -> None:
        if buffers.__class__ is list:
            buffers = [buffer for buffer in buffers if len(buffer)]
            if not buffers:
                if send_id:
                    self._report_sent(send_id)
                return
            for buffer in buffers[:-1]:
                self._write(buffer)
            self._write(buffers[-1], send_id)
        elif len(buffers):
            self._write(buffers, send_id)
        elif send_id:
            self._report_sent(send_id)

    def _report_sent(self, send_id: int) -> None:
        """An empty send completes at once, after the callback returns."""
        self.loop.call_later(0, self._piece_sent, send_id)

    def _piece_sent(self, send_id: int) -> None:
        complete = self._send_complete
        if complete is None or self.closed:
            return
        loop = self.loop
        loop.current_transport = self
        self._corked = True
        try:
            self._send_result(complete(self, send_id))
        except Exception:
            self._callback_failed("send_complete")
        finally:
            loop.current_transport = None
        self._uncork()

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
        self._counters.callback_errors += 1
        self.close()


def current() -> Transport:
    """The connection whose callback is running; :class:`NotInCallback`
    outside one (PyParallel's ``parallel.transport()``)."""
    worker = _context.local.worker
    transport: Transport | None = None if worker is None else worker.current_transport
    if transport is None:
        raise NotInCallback("parallio.transport() is only meaningful inside a protocol "
                            "callback (data_received, connection_made, ...)")
    return transport


class _CallableModule(types.ModuleType):
    """This module's type: ``parallio.transport()`` calls :func:`current`."""

    def __call__(self) -> Transport:
        return current()


sys.modules[__name__].__class__ = _CallableModule
