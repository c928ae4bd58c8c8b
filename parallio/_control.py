"""Messages between the main thread and a worker over a socketpair.

A socketpair works the same in all three hosts (threads share it, a
subinterpreter is given its descriptor number, a process inherits it), can be
read by the worker's own engine like any socket, and reads EOF the moment the
other side dies: that is how the main thread notices a dead worker.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
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
