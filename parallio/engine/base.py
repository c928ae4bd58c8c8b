"""The completion interface every I/O engine implements.

A worker owns exactly one engine and drives it from one thread. The worker
*submits* operations (accept, read, send, sendfile, connect, close) and the
engine later *completes* them by calling the callback given at submission,
always from inside :meth:`Engine.poll`, never from inside the submitting call:
callers can submit from within a callback without re-entrancy surprises.

Results follow the kernel's convention: a non-negative int is success (bytes
moved, a new file descriptor, 0), a negative int is ``-errno``. Reads deliver
``bytes``; ``b""`` means the peer closed its side.

The interface is deliberately thin. Policy -- send queues, partial-send
resubmission, backpressure, timers -- lives once, above the engines, in
:mod:`parallio.transport` and :mod:`parallio.worker`.
"""

from __future__ import annotations

import abc
from typing import Callable, Sequence, Union

Buffer = Union[bytes, bytearray, memoryview]
ResultCallback = Callable[[int], None]
DataCallback = Callable[[Union[bytes, int]], None]

# Reads hand out chunks of at most this many bytes. Large enough that a
# pipelined burst of small requests arrives in one callback.
READ_CHUNK = 64 * 1024


class Engine(abc.ABC):
    """One completion engine: owned and driven by a single thread."""

    #: "uring" or "epoll"
    name: str

    @abc.abstractmethod
    def accept(self, listen_fd: int, on_accept: ResultCallback) -> None:
        """Accept connections on ``listen_fd`` until :meth:`stop_accepting`.

        ``on_accept`` is called once per accepted connection with its new,
        non-blocking, close-on-exec file descriptor, or with ``-errno``.
        Transient errors (EMFILE, ECONNABORTED...) are reported and accepting
        goes on.
        """

    @abc.abstractmethod
    def stop_accepting(self, listen_fd: int) -> None:
        """Stop accepting on ``listen_fd``; no ``on_accept`` call follows."""

    @abc.abstractmethod
    def start_reading(self, fd: int, on_data: DataCallback) -> None:
        """Read from ``fd`` continuously until :meth:`stop_reading` or EOF.

        ``on_data`` gets each chunk as ``bytes`` (at most :data:`READ_CHUNK`),
        ``b""`` once at end of stream, or ``-errno`` once on error. After EOF
        or an error, reading has stopped.
        """

    @abc.abstractmethod
    def stop_reading(self, fd: int) -> None:
        """Pause reading (backpressure). No ``on_data`` call follows until
        :meth:`start_reading` is called again. Data already received by the
        engine but not yet delivered is kept and delivered after resuming."""

    @abc.abstractmethod
    def send(self, fd: int, data: Buffer, on_sent: ResultCallback) -> None:
        """Send from ``data`` once; ``on_sent`` gets the number of bytes sent
        (possibly fewer than ``len(data)``) or ``-errno``. The engine keeps
        ``data`` alive until then. At most one send or sendfile per ``fd`` is
        in flight at a time: the caller orders its sends."""

    @abc.abstractmethod
    def sendmsg(self, fd: int, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        """Gather-send ``buffers`` once, as :meth:`send`."""

    @abc.abstractmethod
    def sendfile(self, fd: int, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        """Send up to ``count`` bytes of ``file_fd`` from ``offset`` without
        copying them through Python; ``on_sent`` gets the bytes sent (maybe
        fewer than asked, 0 at end of file) or ``-errno``."""

    @abc.abstractmethod
    def connect(self, fd: int, address: tuple, on_connected: ResultCallback) -> None:
        """Connect the non-blocking socket ``fd`` to ``address`` (as for
        :meth:`socket.socket.connect`); ``on_connected`` gets 0 or ``-errno``."""

    @abc.abstractmethod
    def close(self, fd: int) -> None:
        """Cancel every operation on ``fd`` and close it. No callback for
        ``fd`` is called afterwards."""

    @abc.abstractmethod
    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (``None``: no limit, ``0``: don't
        wait) for completions and call their callbacks."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release the engine's kernel resources. Open descriptors it was
        given stay open; the caller closes them."""
