"""A byte stream over an engine handle: the policy the engines leave out.

:class:`Stream` owns what every consumer of a connected socket needs and the
engines deliberately do not do: the ordered send queue (one send in flight,
partial sends resumed, consecutive pieces gathered into one send), file
sends in slices, high/low water marks, corking while a callback runs, the
lingering close, and the bookkeeping of a connection's end. Subclasses add
what their API means on top: :class:`parallio.transport.Transport` runs
PyParallel's protocol classes; an asyncio transport would run asyncio
protocols on the same policy.

A stream depends on its :class:`Loop` alone: an engine, timers, counters
and a close notification, so it runs under a parallio worker or any other
loop that drives an engine.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import Any, Callable, Protocol

from .engine.base import Buffer, Engine, Handle

#: More than this many unsent bytes is over the high water mark...
HIGH_WATER = 256 * 1024
#: ...and fewer than this many is back under the low one.
LOW_WATER = 64 * 1024
# Files go out in slices so one large file cannot monopolise a worker's turn.
_SENDFILE_SLICE = 1 << 20
# A queued file slice costs no memory but holds a descriptor; count it so a
# client pipelining many file requests trips the water mark too.
_FILE_SEND_WEIGHT = 16 * 1024
# Queued pieces are gathered into one send up to this many buffers (IOV_MAX
# is 1024) and joined into one buffer when their total is below _JOIN_BELOW.
_GATHER_MAX = 512
_JOIN_BELOW = 16 * 1024
# A lingering close reads and discards the peer's data for at most this
# long, and at most this much, before closing anyway.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Counters:
    """Per-loop traffic counters (what ``parallio.stats()`` reports)."""

    __slots__ = ("bytes_in", "bytes_out", "callbacks", "callback_errors", "requests")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.callbacks = 0
        self.callback_errors = 0
        #: Requests of a request/response protocol (HTTP) begun.
        self.requests = 0


class Loop(Protocol):
    """What a stream needs from whoever drives its engine."""

    engine: Engine[Any]
    counters: Counters

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> Cancellable: ...

    def stream_closed(self, stream: "Stream") -> None: ...


class _Piece:
    """One queued piece of output: a buffer, or a slice of a file."""

    __slots__ = ("data", "send_id", "file", "offset", "remaining")

    def __init__(self, data: Any, send_id: int, file: Any = None,
                 offset: int = 0, remaining: int = 0) -> None:
        self.data = data      # a non-empty buffer, or None for a file
        self.file = file      # an open binary file object for file pieces
        self.offset = offset
        self.remaining = remaining
        self.send_id = send_id  # non-zero when its completion is reported


def _ignore_result(result: int) -> None:
    """What a closed stream's completions reach (the engine drops them)."""


def _size(data: Buffer) -> int:
    return len(data) if data.__class__ is bytes else memoryview(data).nbytes


class Stream:
    """One connected socket's output and life cycle; see the module docstring.

    Subclasses start reading with :meth:`_start_reading` and implement the
    hooks: :meth:`_on_data`, :meth:`_over_high_water`,
    :meth:`_under_low_water`, :meth:`_piece_sent` and :meth:`_lost`.
    """

    __slots__ = (
        "loop", "engine", "handle", "_inflight", "_inflight_size", "_inflight_id",
        "_inflight_pieces", "_queue", "_queued_bytes", "_corked", "_held", "_held_id",
        "_reading", "closing", "closed", "_eof", "_over_water", "_high_water", "_low_water",
        "_linger", "_on_sent_callback", "_sent_total", "_drain_waiter", "__weakref__",
    )

    def __init__(self, loop: Loop, handle: Handle) -> None:
        self.loop = loop
        self.engine = loop.engine
        self.handle = handle
        #: The buffer (or list of buffers) the engine is sending, or None.
        self._inflight: Any = None
        self._inflight_size = 0
        self._inflight_id = 0
        #: How many queue pieces the send in flight covers: 0 when it was
        #: sent straight (no queue), -1 for a file slice.
        self._inflight_pieces = 0
        self._queue: deque[_Piece] | None = None
        #: Bytes not yet sent: in flight and queued (files by weight).
        self._queued_bytes = 0
        #: While set, writes only queue; :meth:`_uncork` sends them as one.
        self._corked = False
        #: The one piece written while corked with nothing before it (the
        #: common case needs no queue), and its send id.
        self._held: Any = None
        self._held_id = 0
        self._reading = False
        #: A close was asked for, or happened (read-only).
        self.closing = False
        #: The connection is closed (read-only).
        self.closed = False
        self._eof = False
        self._over_water = False
        self._high_water = HIGH_WATER
        self._low_water = LOW_WATER
        self._linger: list[Any] | None = None  # [timer, bytes discarded] while lingering
        self._on_sent_callback: Callable[[int], None] = self._on_sent
        self._sent_total = 0
        self._drain_waiter: Callable[[], object] | None = None

    # -- hooks --------------------------------------------------------------
    def _on_data(self, data: bytes | int) -> None:
        """A chunk read, ``b""`` at EOF or ``-errno`` (the engine's contract)."""
        raise NotImplementedError

    def _over_high_water(self) -> None:
        """More than the high water mark waits to be sent."""

    def _under_low_water(self) -> None:
        """After :meth:`_over_high_water`: back under the low water mark."""

    def _piece_sent(self, send_id: int) -> None:
        """The piece written with a non-zero ``send_id`` was sent whole."""

    def _lost(self, exc: BaseException | None) -> None:
        """The connection is closed (``exc`` None for a clean close)."""

    # -- reading ------------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._reading and not self.closing:
            self._reading = True
            self.engine.start_reading(self.handle, self._on_data)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.engine.stop_reading(self.handle)

    # -- writing ------------------------------------------------------------
    def _write(self, data: Buffer, send_id: int = 0) -> None:
        """Send ``data`` (a non-empty buffer) after everything before it."""
        size = len(data) if data.__class__ is bytes else memoryview(data).nbytes
        self._queued_bytes += size
        if self._inflight is None and not self._queue:
            if not self._corked:
                self._inflight = data
                self._inflight_size = size
                self._inflight_id = send_id
                self._inflight_pieces = 0
                self.engine.send(self.handle, data, self._on_sent_callback)
            elif self._held is None:
                self._held = data
                self._held_id = send_id
            else:
                self._queue_held()
                self._enqueue(_Piece(data, send_id))
        else:
            self._enqueue(_Piece(data, send_id))
        if self._queued_bytes > self._high_water and not self._over_water:
            self._over_water = True
            self._over_high_water()

    def _queue_held(self) -> None:
        self._enqueue(_Piece(self._held, self._held_id))
        self._held = None

    def _write_file(self, file: Any, offset: int, count: int, send_id: int = 0) -> None:
        """Send ``count`` bytes of the open ``file`` from ``offset``; the
        stream closes the file once it is sent or the stream closes."""
        self._queued_bytes += _FILE_SEND_WEIGHT
        if self._held is not None:
            self._queue_held()
        self._enqueue(_Piece(None, send_id, file, offset, count))
        if self._inflight is None and not self._corked:
            self._pump()
        if self._queued_bytes > self._high_water and not self._over_water:
            self._over_water = True
            self._over_high_water()

    def _enqueue(self, piece: _Piece) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(piece)

    def _uncork(self) -> None:
        """End corking: send what was written meanwhile, in one send where
        it can; then close if a close was asked for meanwhile."""
        self._corked = False
        held = self._held
        if held is not None:
            # Held means nothing was queued or in flight when it was written.
            self._held = None
            self._inflight = held
            self._inflight_size = len(held) if held.__class__ is bytes else memoryview(held).nbytes
            self._inflight_id = self._held_id
            self._inflight_pieces = 0
            self.engine.send(self.handle, held, self._on_sent_callback)
        elif self._inflight is None:
            if self._queue:
                self._pump()
            elif self.closing and not self.closed:
                self._close_gracefully()

    def _pump(self) -> None:
        """Start the next send from the queue (nothing is in flight)."""
        queue = self._queue
        while queue:
            piece = queue[0]
            if piece.file is not None:
                if not piece.remaining:
                    queue.popleft()
                    self._file_done(piece)
                    if self.closed:
                        return
                    continue
                self._inflight = piece
                self._inflight_pieces = -1
                self.engine.sendfile(self.handle, piece.file.fileno(), piece.offset,
                                     min(piece.remaining, _SENDFILE_SLICE),
                                     self._on_sent_callback)
                return
            count = 1
            total = _size(piece.data)
            for following in queue:
                if following is piece:
                    continue
                if following.file is not None or count == _GATHER_MAX:
                    break
                count += 1
                total += _size(following.data)
            self._inflight_size = total
            self._inflight_pieces = count
            if count == 1:
                self._inflight = piece.data
                self.engine.send(self.handle, piece.data, self._on_sent_callback)
            else:
                buffers = [queue[index].data for index in range(count)]
                if total < _JOIN_BELOW:
                    self._inflight = joined = b"".join(buffers)
                    self.engine.send(self.handle, joined, self._on_sent_callback)
                else:
                    self._inflight = buffers
                    self.engine.sendmsg(self.handle, buffers, self._on_sent_callback)
            return
        if self.closing and not self.closed:
            self._close_gracefully()

    def _on_sent(self, sent: int) -> None:
        if self.closed:
            return
        inflight = self._inflight
        self._inflight = None
        if sent < 0:
            self._abort(OSError(-sent, os.strerror(-sent)))
            return
        self.loop.counters.bytes_out += sent
        self._sent_total += sent
        pieces = self._inflight_pieces
        if pieces == 0:
            self._queued_bytes -= sent
            if sent != self._inflight_size:
                # A partial send: the rest goes first, before anything queued.
                rest = _Piece(memoryview(inflight)[sent:], self._inflight_id)
                if self._queue is None:
                    self._queue = deque()
                self._queue.appendleft(rest)
            elif self._inflight_id:
                self._piece_sent(self._inflight_id)
                if self.closed:
                    return
        elif pieces < 0:
            piece = inflight
            if sent == 0:
                self._abort(OSError(errno.EIO, "file ended before its range was sent"))
                return
            piece.offset += sent
            piece.remaining -= sent
            if not piece.remaining:
                assert self._queue is not None
                self._queue.popleft()
                self._file_done(piece)
                if self.closed:
                    return
        else:
            self._queued_bytes -= sent
            # The queue is made consistent before any completion is reported:
            # a report may write, and so start the next send from the queue.
            for send_id in self._consume(pieces, sent):
                self._piece_sent(send_id)
                if self.closed:
                    return
        if self._over_water and self._queued_bytes < self._low_water:
            self._over_water = False
            self._under_low_water()
            if self.closed:
                return
        if self._drain_waiter is not None and self._queued_bytes < self._low_water:
            waiter, self._drain_waiter = self._drain_waiter, None
            waiter()
            if self.closed:
                return
        if self._inflight is None and not self._corked:
            if self._queue:
                self._pump()
            elif self.closing:
                self._close_gracefully()

    def _consume(self, pieces: int, sent: int) -> list[int]:
        """Drop what ``sent`` bytes took of the first ``pieces`` pieces;
        return the send ids of the pieces sent whole."""
        queue = self._queue
        assert queue is not None
        finished = []
        for _ in range(pieces):
            piece = queue[0]
            size = _size(piece.data)
            if sent < size:
                piece.data = memoryview(piece.data)[sent:]
                break
            sent -= size
            queue.popleft()
            if piece.send_id:
                finished.append(piece.send_id)
        return finished

    def _file_done(self, piece: _Piece) -> None:
        piece.file.close()
        self._queued_bytes -= _FILE_SEND_WEIGHT
        if piece.send_id:
            self._piece_sent(piece.send_id)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """More than ``high`` unsent bytes is over the high water mark, and
        fewer than ``low`` (a quarter of ``high`` by default) back under."""
        if high is None:
            high = HIGH_WATER if low is None else max(4 * low, low)
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, not low={low!r} high={high!r}")
        self._high_water, self._low_water = high, low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def when_drained(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once fewer than the low water mark of bytes
        wait to be sent (at once, after this turn, if that is so already).
        One waiter at a time: a producer of output that waits for room."""
        if self._queued_bytes < self._low_water:
            self.loop.call_later(0, callback)
        else:
            self._drain_waiter = callback

    @property
    def bytes_sent(self) -> int:
        """Bytes this connection has sent so far."""
        return self._sent_total

    @property
    def write_buffer_size(self) -> int:
        """Bytes waiting to be sent (a file slice counts as 16 KiB)."""
        return self._queued_bytes

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Close once everything queued has been sent."""
        if self.closing:
            return
        self.closing = True
        self._stop_reading()
        if self._inflight is None and not self._queue and not self._corked:
            # Not at once: the running callback may still queue what to send
            # last ("transport.close(); return b'bye'").
            self.loop.call_later(0, self._close_if_drained)

    def _close_if_drained(self) -> None:
        if not self.closed and self._inflight is None and not self._queue:
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
        self.engine.shutdown_write(self.handle)
        self._linger = [self.loop.call_later(LINGER_SECONDS, self._finish, None), 0]
        self.engine.start_reading(self.handle, self._discard_while_lingering)

    def _discard_while_lingering(self, data: bytes | int) -> None:
        linger = self._linger
        assert linger is not None
        if data.__class__ is bytes and data:
            linger[1] += len(data)
            if linger[1] <= LINGER_MAX_BYTES:
                return
        self._finish(None)

    def drain(self) -> None:
        """The server is stopping: close once what is queued is sent.
        Subclasses whose protocol is in the middle of something (a request
        being answered) may let it finish first."""
        self.close()

    def abort(self) -> None:
        """Close now, dropping whatever has not been sent."""
        self._abort(None)

    def _abort(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.closing = True
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing = True
        self._reading = False
        if self._linger is not None:
            self._linger[0].cancel()
            self._linger = None
        self.engine.close(self.handle)
        # What the stream held goes now, not when the object is collected.
        queue, self._queue = self._queue, None
        if queue:
            for piece in queue:
                if piece.file is not None:
                    piece.file.close()
        self._inflight = self._held = self._drain_waiter = None
        self._queued_bytes = 0
        # A bound method of this object: without this, every closed stream
        # would wait for the garbage collector.
        self._on_sent_callback = _ignore_result
        try:
            self._lost(exc)
        finally:
            self.loop.stream_closed(self)
