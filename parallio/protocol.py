"""PyParallel's protocol classes: what their attributes mean, sans I/O.

A protocol is any class; parallio makes one instance per connection and looks
for these optional attributes (see the README for the full table):

``initial_bytes_to_send``, ``connection_made``, ``data_received``,
``lines_mode`` + ``lines_received``, ``next_bytes_to_send``,
``send_complete``, ``exception_handler``, ``connection_lost``. (``http11``
classes are adapted by :func:`parallio.register`, which turns them into the
HTTP fast path's protocol.)

What a callback returns is sent: ``None`` sends nothing, ``bytes``,
``bytearray`` and ``memoryview`` are sent as they are (returning the received
``data`` echoes it without a copy), ``str`` is sent UTF-8 encoded and a tuple
or list of those is sent as one gather-send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """A protocol class or a callback's return value breaks the rules."""


def to_buffers(value: Any) -> Any:
    """Turn a callback's return value into what the transport sends.

    Returns one buffer (bytes, bytearray, memoryview, or another object with
    the buffer protocol), or a list of buffers for a gather-send. ``None`` must
    be filtered out by the caller (it is the common case and cheapest there).
    """
    cls = value.__class__
    if cls is bytes or cls is bytearray or cls is memoryview:
        return value
    if cls is str:
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    if isinstance(value, str):
        return str.encode(value)
    if isinstance(value, (tuple, list)):
        buffers: list[Any] = []
        for part in value:
            if part is None:
                continue
            converted = to_buffers(part)
            if converted.__class__ is list:
                buffers.extend(converted)
            else:
                buffers.append(converted)
        return buffers
    raise ProtocolError(
        f"a callback returned {cls.__name__}; return None, bytes, bytearray, "
        "memoryview, str, or a tuple of those")


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol class provides, looked up once, not per event."""

    cls: type
    initial_bytes: Any  # a value, a zero-argument callable, or None
    next_bytes: Any  # likewise
    lines_mode: bool
    max_line: int

    @classmethod
    def of(cls, protocol: Any) -> "ProtocolSpec":
        # An object with __parallio_protocol__ (an HttpServer, a WSGI server,
        # an http11 class as register() wraps it) stands for the protocol
        # class that method makes.
        make = getattr(protocol, "__parallio_protocol__", None)
        if make is not None:
            protocol = make()
        if not isinstance(protocol, type):
            raise ProtocolError(f"a protocol must be a class, not {protocol!r}")
        lines_mode = bool(getattr(protocol, "lines_mode", False))
        if lines_mode and not callable(getattr(protocol, "lines_received", None)):
            raise ProtocolError(f"{protocol.__qualname__} sets lines_mode but has no lines_received")
        return cls(
            cls=protocol,
            initial_bytes=getattr(protocol, "initial_bytes_to_send", None),
            next_bytes=getattr(protocol, "next_bytes_to_send", None),
            lines_mode=lines_mode,
            max_line=int(getattr(protocol, "max_line_length", DEFAULT_MAX_LINE)),
        )


class LineTooLong(ProtocolError):
    pass


class LineSplitter:
    """Cuts a byte stream into lines for ``lines_mode`` protocols.

    Lines end with ``\\n`` or ``\\r\\n``; they are delivered as ``bytes``
    without their ending. A line longer than ``max_line`` raises
    :class:`LineTooLong` rather than buffering without bound.
    """

    __slots__ = ("_pending", "_max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._pending = b""
        self._max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self._max_line:
            self._pending = b""
            raise LineTooLong(f"a line is longer than {self._max_line} bytes")
        for index, line in enumerate(lines):
            if line.endswith(b"\r"):
                lines[index] = line = line[:-1]
            if len(line) > self._max_line:
                raise LineTooLong(f"a line is longer than {self._max_line} bytes")
        return lines
