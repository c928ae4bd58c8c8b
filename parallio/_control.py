"""Messages between the main thread and a worker over a socketpair.

A socketpair works the same in all three hosts (threads share it, a
subinterpreter is given its descriptor number, a process inherits it), can be
read by the worker's own engine like any socket, and reads EOF the moment the
other side dies: that is how the main thread notices a dead worker.
"""

from __future__ import annotations

import collections
import os
import pickle
import select
import struct
import threading
from typing import Any

_LENGTH = struct.Struct("!I")


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


class MessageReader:
    """Splits a byte stream into messages (sans-I/O)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        while len(buffer) >= 4:
            (length,) = _LENGTH.unpack_from(buffer)
            end = 4 + length
            if len(buffer) < end:
                break
            messages.append(pickle.loads(bytes(buffer[4:end])))
            del buffer[:end]
        return messages

    def missing(self) -> int:
        """Bytes still needed to complete the next message (its length
        first): reading no more than that takes no byte of the one after."""
        buffer = self._buffer
        if len(buffer) < 4:
            return 4 - len(buffer)
        return 4 + _LENGTH.unpack_from(buffer)[0] - len(buffer)


def write_all(fd: int, data: bytes) -> None:
    """Write everything, waiting when a non-blocking descriptor is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


class Outbox:
    """Whole frames waiting for a non-blocking descriptor, written as it has
    room: the writer never blocks on a reader that is slow, stopped or
    hung, and what the reader gets is always whole frames in order.

    Thread-safe: any thread may :meth:`put`; whoever watches the descriptor
    for writability calls :meth:`flush` when it is ready. Past ``limit``
    bytes queued, new frames are refused whole (``put`` returns False): a
    reader that takes nothing must not make the writer's memory grow.
    """

    __slots__ = ("fd", "limit", "_frames", "_offset", "_queued", "_lock", "dropped")

    def __init__(self, fd: int, limit: int = 64 << 20) -> None:
        self.fd = fd
        self.limit = limit
        self._frames: collections.deque[bytes] = collections.deque()
        self._offset = 0   # bytes of the first frame already written
        self._queued = 0
        self._lock = threading.Lock()
        #: Frames refused because the queue was full.
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Bytes queued and not yet written."""
        return self._queued

    def put(self, frame: bytes) -> bool:
        """Queue ``frame`` (from :func:`encode`) and write what fits now.
        False when it was refused: the queue is full, or the reader is gone."""
        with self._lock:
            if self.fd < 0:
                return False
            if self._queued and self._queued + len(frame) > self.limit:
                self.dropped += 1
                return False
            self._frames.append(frame)
            self._queued += len(frame)
            return self._flush()

    def flush(self) -> bool:
        """Write what the descriptor takes now; False if the reader is gone."""
        with self._lock:
            return self._flush()

    def close(self) -> None:
        """Drop what is queued and write nothing more: the caller is about to
        close the descriptor (its number may then be reused)."""
        with self._lock:
            self.fd = -1
            self._frames.clear()
            self._queued = self._offset = 0

    def _flush(self) -> bool:
        if self.fd < 0:
            return False
        frames = self._frames
        while frames:
            frame = frames[0]
            try:
                written = os.write(self.fd, memoryview(frame)[self._offset:])
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                # The reader is gone (EPIPE, ECONNRESET): nothing queued can
                # reach it any more.
                frames.clear()
                self._queued = self._offset = 0
                return False
            self._offset += written
            self._queued -= written
            if self._offset == len(frame):
                frames.popleft()
                self._offset = 0
        return True
