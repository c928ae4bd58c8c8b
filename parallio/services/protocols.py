"""The classic small TCP services, as PyParallel shipped them.

Each is a plain protocol class: ``python -m parallio echo --port 8007`` or
``parallio.register(transport=server, protocol=Echo)``.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from ..transport import Transport


class Discard:
    """RFC 863: read and throw away."""

    def data_received(self, transport: Transport, data: bytes) -> None:
        return None


class Echo:
    """RFC 862: send back what arrives (the same object: no copy)."""

    def data_received(self, transport: Transport, data: bytes) -> bytes:
        return data


class EchoUpper:
    """Echo, upper-cased."""

    def data_received(self, transport: Transport, data: bytes) -> bytes:
        return data.upper()


class EchoLine:
    """Echo whole lines (lines mode): each line comes back with CRLF."""

    lines_mode = True

    def lines_received(self, transport: Transport, line: bytes) -> tuple[bytes, bytes]:
        return (line, b"\r\n")


class Daytime:
    """RFC 867: the date and time as text, then close."""

    def connection_made(self, transport: Transport) -> str:
        transport.close()
        return formatdate(time.time(), usegmt=True) + "\r\n"


class Qotd:
    """RFC 865: a quote of the day, then close."""

    quote = ('"The best way to predict the future is to invent it." -- Alan Kay\r\n')

    def connection_made(self, transport: Transport) -> str:
        transport.close()
        return self.quote


def _chargen_lines() -> bytes:
    """RFC 864's rotating pattern: 95 lines of 72 printable characters."""
    printable = bytes(range(32, 127))
    doubled = printable + printable
    return b"".join(doubled[start:start + 72] + b"\r\n" for start in range(len(printable)))


class Chargen:
    """RFC 864: stream characters until the client goes away.

    Streams with ``send_complete``: the next block is produced only once the
    previous one has been sent, so a slow client never makes the server buffer
    more than one ``window``.
    """

    window = 64 * 1024
    _pattern = _chargen_lines()
    # The pattern repeated past one window, so any window of the stream is
    # one zero-copy slice of it.
    _repeated = _pattern * (window // len(_pattern) + 2)

    def __init__(self) -> None:
        self._offset = 0

    def _next_block(self) -> memoryview:
        start = self._offset
        self._offset = (start + self.window) % len(self._pattern)
        return memoryview(self._repeated)[start:start + self.window]

    def connection_made(self, transport: Transport) -> memoryview:
        return self._next_block()

    def send_complete(self, transport: Transport, send_id: int) -> memoryview:
        return self._next_block()

    def data_received(self, transport: Transport, data: bytes) -> None:
        return None
