"""The completion interface every I/O engine implements.

A worker (or an event loop) owns exactly one engine and drives it from one
thread. It hands the engine a descriptor with :meth:`Engine.open` and gets a
*handle* back: the engine's record of that descriptor, passed to every later
operation instead of the descriptor number. Handles are never reused, so a
completion can never reach the owner of a closed descriptor whose number the
kernel gave to a new socket.

Operations are *submitted* and later *completed*: the engine calls the
callback given at submission, always from inside :meth:`Engine.poll`, never
from inside the submitting call, so callers can submit from a callback
without re-entrancy surprises.

Results follow the kernel's convention: a non-negative int is success (bytes
moved, a new descriptor, 0), a negative int is ``-errno``. Reads deliver
``bytes``; ``b""`` means the peer closed its side.

The interface is deliberately thin. Policy -- send queues, partial-send
resumption, backpressure, timers -- lives once, above the engines, in
:mod:`parallio.stream`.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Generic, Sequence, TypeVar, Union

Buffer = Union[bytes, bytearray, memoryview]
ResultCallback = Callable[[int], None]
DataCallback = Callable[[Union[bytes, int]], None]

# Reads hand out chunks of at most this many bytes. Large enough that a
# pipelined burst of small requests arrives in one callback.
READ_CHUNK = 64 * 1024


class Handle:
    """What an engine knows of one descriptor; opaque above the engine."""

    __slots__ = ("fd",)

    fd: int


H = TypeVar("H", bound=Handle)


class Engine(abc.ABC, Generic[H]):
    """One completion engine: owned and driven by a single thread. Its
    operations take the handles its own :meth:`open` returned."""

    #: "uring" or "epoll"
    name: str

    @abc.abstractmethod
    def open(self, fd: int) -> H:
        """Start managing ``fd``, a non-blocking socket; returns its handle."""

    @abc.abstractmethod
    def accept(self, handle: H, on_accept: ResultCallback) -> None:
        """Accept connections on the listening socket of ``handle`` until
        :meth:`stop_accepting`.

        ``on_accept`` is called once per accepted connection with its new,
        non-blocking, close-on-exec descriptor, or with ``-errno``. Transient
        errors (EMFILE, ECONNABORTED...) are reported and accepting goes on;
        after an error that will recur (EBADF, EINVAL...) accepting stops.
        """

    @abc.abstractmethod
    def stop_accepting(self, handle: H) -> None:
        """Stop accepting on ``handle``; no ``on_accept`` call follows."""

    @abc.abstractmethod
    def start_reading(self, handle: H, on_data: DataCallback) -> None:
        """Read continuously until :meth:`stop_reading`, EOF or an error.

        ``on_data`` gets each chunk as ``bytes`` (at most :data:`READ_CHUNK`),
        ``b""`` once at end of stream, or ``-errno`` once on error. After EOF
        or an error, reading has stopped.
        """

    @abc.abstractmethod
    def stop_reading(self, handle: H) -> None:
        """Pause reading (backpressure): the kernel stops taking data from
        the peer. No ``on_data`` call follows until :meth:`start_reading` is
        called again. Data already received by the engine but not yet
        delivered is kept and delivered after resuming."""

    @abc.abstractmethod
    def recv_into(self, handle: H, buffer: Buffer, on_done: ResultCallback) -> None:
        """Read once into the writable ``buffer``; ``on_done`` gets the bytes
        read (0 at end of stream) or ``-errno``. Not while reading
        continuously on the same handle."""

    @abc.abstractmethod
    def send(self, handle: H, data: Buffer, on_sent: ResultCallback) -> None:
        """Send from ``data`` once; ``on_sent`` gets the number of bytes sent
        (possibly fewer than ``len(data)``) or ``-errno``. The engine keeps
        ``data`` alive until then. At most one send, sendmsg, sendfile or
        connect per handle is in flight at a time: the caller orders them."""

    @abc.abstractmethod
    def sendmsg(self, handle: H, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        """Gather-send ``buffers`` once, as :meth:`send`."""

    @abc.abstractmethod
    def sendfile(self, handle: H, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        """Send up to ``count`` bytes of ``file_fd`` from ``offset`` without
        copying them through Python; ``on_sent`` gets the bytes sent (maybe
        fewer than asked, 0 at end of file) or ``-errno``."""

    @abc.abstractmethod
    def connect(self, handle: H, address: tuple[Any, ...], on_connected: ResultCallback) -> None:
        """Connect the socket to ``address`` (as for
        :meth:`socket.socket.connect`, already resolved); ``on_connected``
        gets 0 or ``-errno``."""

    @abc.abstractmethod
    def shutdown_write(self, handle: H) -> None:
        """Shut the write side of the connection (the peer reads EOF), after
        every send completed; reading goes on. Errors are not reported: a
        peer that is gone shows at the next read."""

    @abc.abstractmethod
    def wait_readable(self, handle: H, callback: ResultCallback) -> None:
        """Call ``callback`` once, with the ready poll mask or ``-errno``,
        when the descriptor is readable (or at EOF or error). For what has
        no completion of its own: datagrams, descriptors a library reads."""

    @abc.abstractmethod
    def wait_writable(self, handle: H, callback: ResultCallback) -> None:
        """As :meth:`wait_readable`, for writability."""

    @abc.abstractmethod
    def cancel_waits(self, handle: H) -> None:
        """Cancel pending :meth:`wait_readable` / :meth:`wait_writable`
        calls; their callbacks are not called."""

    @abc.abstractmethod
    def release(self, handle: H) -> None:
        """Cancel every operation and forget ``handle``, leaving its
        descriptor open (its owner closes it). No callback of it follows."""

    @abc.abstractmethod
    def close(self, handle: H) -> None:
        """:meth:`release`, then close the descriptor once the kernel holds
        no operation on it."""

    def trim(self) -> None:
        """Give back memory the engine holds beyond what it needs now: for
        a loop to call once a burst of traffic is over. Nothing by default."""

    @abc.abstractmethod
    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (``None``: no limit, ``0``: don't
        wait) for completions and call their callbacks."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release the engine's kernel resources. Open descriptors it was
        given stay open; their owners close them."""
