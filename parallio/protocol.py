"""PyParallel's protocol classes: what their attributes mean, sans I/O.

A protocol is any class; parallio makes one instance per connection and looks
for these optional attributes (see the README for the full table):

``initial_bytes_to_send``, ``connection_made``, ``data_received``,
``lines_mode`` + ``lines_received``, ``next_bytes_to_send``,
``send_complete``, ``exception_handler``, ``connection_lost``, ``http11``.

What a callback returns is sent: ``None`` sends nothing, ``bytes``,
``bytearray`` and ``memoryview`` are sent as they are (returning the received
``data`` echoes it without a copy), ``str`` is sent UTF-8 encoded and a tuple
or list of those is sent as one gather-send.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """A protocol class or a callback's return value breaks the rules."""


def to_buffers(value: Any) -> bytes | memoryview | bytearray | list:
    """Turn a callback's return value into what the transport sends.

    Returns one buffer, or a list of buffers for a gather-send. ``None`` must
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
        buffers: list = []
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
        # An object with __parallio_protocol__ (an HttpServer, a WSGI server)
        # stands for the protocol class that method makes.
        make = getattr(protocol, "__parallio_protocol__", None)
        if make is not None:
            protocol = make()
        if not isinstance(protocol, type):
            raise ProtocolError(f"a protocol must be a class, not {protocol!r}")
        if getattr(protocol, "http11", False):
            from .http.fastpath import fast_path_protocol
            protocol = fast_path_protocol(protocol)
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


# -- naming protocols so every worker can find them --------------------------

@dataclass(frozen=True)
class ObjectRef:
    """A class or function named by import path, plus the object itself.

    Workers in the threads host use ``obj`` directly; other hosts import
    ``path`` (``module:qualname``). ``module`` ``__main__`` means the user's
    main script, which workers load under another name (as multiprocessing
    does), so its ``if __name__ == "__main__"`` block does not run again.

    With ``by_value``, ``obj`` itself is pickled to the workers (an object
    made from command-line options, say) and ``path`` only names the module
    they must be able to import (the interpreters host checks that it can).
    Objects other than classes and functions make their own reference with
    a ``__parallio_ref__()`` method.
    """

    path: str
    obj: Any = None
    by_value: bool = False

    def __getstate__(self) -> dict:
        return {"path": self.path, "obj": self.obj if self.by_value else None,
                "by_value": self.by_value}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "path", state["path"])
        object.__setattr__(self, "obj", state["obj"])
        object.__setattr__(self, "by_value", state.get("by_value", False))

    @classmethod
    def of(cls, target: Any) -> "ObjectRef":
        if isinstance(target, str):
            if ":" not in target:
                raise ValueError(f"{target!r}: name a class or function as 'module:Name'")
            return cls(target)
        if not isinstance(target, type) and hasattr(target, "__parallio_ref__"):
            return target.__parallio_ref__()
        module = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", None)
        if module is None or qualname is None or "<locals>" in qualname:
            raise ValueError(
                f"{target!r} cannot be named by import path: define it at module level")
        return cls(f"{module}:{qualname}", target)

    def resolve(self) -> Any:
        if self.obj is not None:
            return self.obj
        module_name, _, qualname = self.path.partition(":")
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj

