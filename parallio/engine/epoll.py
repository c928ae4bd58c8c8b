"""Completions emulated on top of epoll readiness.

Used where io_uring is missing or forbidden (seccomp in containers). Each
operation is first tried at once on the non-blocking descriptor; only when the
kernel says EAGAIN does it wait for readiness. Either way its completion is
queued and delivered from :meth:`EpollEngine.poll`, as the contract requires.

Registrations are level-triggered and kept while the descriptor has anything
pending. That is safe only because every descriptor leaves the engine through
:meth:`EpollEngine.close` or :meth:`EpollEngine.release`, which unregister it
before it can be closed: a descriptor closed behind the engine's back would
stay in the epoll set under a number the kernel may give to a new socket
(the hazard trio's ``_io_epoll`` documents at length).
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from typing import Any, Callable, Sequence

from .. import _sockets
from .base import READ_CHUNK, Buffer, DataCallback, Engine, Handle, ResultCallback

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
# Accepting in batches keeps a connection storm from starving established
# connections, while amortising the epoll round trip.
_ACCEPT_BATCH = 32


def _errno_of(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


class _Fd(Handle):
    """What is pending on one descriptor."""

    __slots__ = ("on_accept", "listener", "on_data", "write_op", "on_written",
                 "on_readable", "on_writable", "recv_into", "mask", "closed")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.on_accept: ResultCallback | None = None
        self.listener: socket.socket | None = None
        self.on_data: DataCallback | None = None
        #: The write waiting for writability: a zero-argument attempt that
        #: returns a result, or None while it would still block.
        self.write_op: Callable[[], int | None] | None = None
        self.on_written: ResultCallback | None = None
        self.on_readable: ResultCallback | None = None
        self.on_writable: ResultCallback | None = None
        self.recv_into: tuple[memoryview, ResultCallback] | None = None
        self.mask = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<epoll handle fd={self.fd}>"


class EpollEngine(Engine[_Fd]):
    name = "epoll"

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, _Fd] = {}
        # Completions waiting for the next poll: (handle, callback, result).
        self._ready: deque[tuple[_Fd, Callable[[Any], None], object]] = deque()

    # -- registration -----------------------------------------------------
    def open(self, fd: int) -> _Fd:
        handle = self._fds[fd] = _Fd(fd)
        return handle

    def _update(self, handle: _Fd) -> None:
        mask = 0
        if (handle.on_accept is not None or handle.on_data is not None
                or handle.on_readable is not None or handle.recv_into is not None):
            mask |= _IN
        if handle.write_op is not None or handle.on_writable is not None:
            mask |= _OUT
        if mask == handle.mask or handle.closed:
            return
        if handle.mask == 0:
            self._epoll.register(handle.fd, mask)
        elif mask == 0:
            self._epoll.unregister(handle.fd)
        else:
            self._epoll.modify(handle.fd, mask)
        handle.mask = mask

    def release(self, handle: _Fd) -> None:
        if handle.closed:
            return
        handle.closed = True
        if self._fds.get(handle.fd) is handle:
            del self._fds[handle.fd]
        if handle.mask:
            self._epoll.unregister(handle.fd)
            handle.mask = 0
        if handle.listener is not None:
            handle.listener.detach()
            handle.listener = None

    def close(self, handle: _Fd) -> None:
        if handle.closed:
            return
        self.release(handle)
        os.close(handle.fd)

    # -- operations ---------------------------------------------------------
    def accept(self, handle: _Fd, on_accept: ResultCallback) -> None:
        handle.on_accept = on_accept
        if handle.listener is None:
            # socket(fileno=...) gives accept4 through the stdlib; detached on
            # release so the caller keeps ownership of the descriptor.
            handle.listener = socket.socket(fileno=handle.fd)
        self._update(handle)

    def stop_accepting(self, handle: _Fd) -> None:
        if handle.on_accept is not None:
            handle.on_accept = None
            self._update(handle)

    def start_reading(self, handle: _Fd, on_data: DataCallback) -> None:
        handle.on_data = on_data
        self._update(handle)

    def stop_reading(self, handle: _Fd) -> None:
        if handle.on_data is not None:
            handle.on_data = None
            self._update(handle)

    def recv_into(self, handle: _Fd, buffer: Buffer, on_done: ResultCallback) -> None:
        view = memoryview(buffer).cast("B")
        try:
            result = os.readv(handle.fd, [view])
        except BlockingIOError:
            handle.recv_into = (view, on_done)
            self._update(handle)
            return
        except OSError as exc:
            result = _errno_of(exc)
        self._ready.append((handle, on_done, result))

    def shutdown_write(self, handle: _Fd) -> None:
        _sockets.shutdown_write(handle.fd)

    def wait_readable(self, handle: _Fd, callback: ResultCallback) -> None:
        handle.on_readable = callback
        self._update(handle)

    def wait_writable(self, handle: _Fd, callback: ResultCallback) -> None:
        handle.on_writable = callback
        self._update(handle)

    def cancel_waits(self, handle: _Fd) -> None:
        handle.on_readable = handle.on_writable = None
        self._update(handle)

    def _write_later(self, handle: _Fd, attempt: Callable[[], int | None],
                     on_done: ResultCallback) -> None:
        if handle.write_op is not None:
            raise RuntimeError(f"a send is already in flight on {handle!r}")
        handle.write_op = attempt
        handle.on_written = on_done
        self._update(handle)

    def send(self, handle: _Fd, data: Buffer, on_sent: ResultCallback) -> None:
        # Tried at once, inline: this is the per-response hot path, and a
        # socket with room in its buffer is by far the common case.
        fd = handle.fd
        try:
            result = os.write(fd, data)
        except BlockingIOError:
            def attempt() -> int | None:
                try:
                    return os.write(fd, data)
                except BlockingIOError:
                    return None
                except OSError as exc:
                    return _errno_of(exc)

            self._write_later(handle, attempt, on_sent)
            return
        except OSError as exc:
            result = _errno_of(exc)
        self._ready.append((handle, on_sent, result))

    def sendmsg(self, handle: _Fd, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        fd = handle.fd
        try:
            result = os.writev(fd, buffers)
        except BlockingIOError:
            def attempt() -> int | None:
                try:
                    return os.writev(fd, buffers)
                except BlockingIOError:
                    return None
                except OSError as exc:
                    return _errno_of(exc)

            self._write_later(handle, attempt, on_sent)
            return
        except OSError as exc:
            result = _errno_of(exc)
        self._ready.append((handle, on_sent, result))

    def sendfile(self, handle: _Fd, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        fd = handle.fd
        try:
            result = os.sendfile(fd, file_fd, offset, count)
        except BlockingIOError:
            def attempt() -> int | None:
                try:
                    return os.sendfile(fd, file_fd, offset, count)
                except BlockingIOError:
                    return None
                except OSError as exc:
                    return _errno_of(exc)

            self._write_later(handle, attempt, on_sent)
            return
        except OSError as exc:
            result = _errno_of(exc)
        self._ready.append((handle, on_sent, result))

    def connect(self, handle: _Fd, address: tuple[Any, ...], on_connected: ResultCallback) -> None:
        fd = handle.fd
        with _sockets.borrowed(fd) as sock:
            try:
                err = sock.connect_ex(address)
            except OSError as exc:
                err = exc.errno or errno.EIO
        if err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._ready.append((handle, on_connected, -err))
            return

        def attempt() -> int:
            with _sockets.borrowed(fd) as sock:
                return -sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

        self._write_later(handle, attempt, on_connected)

    # -- the loop ---------------------------------------------------------
    def poll(self, timeout: float | None) -> None:
        ready = self._ready
        if ready:
            timeout = 0
        events = self._epoll.poll(-1 if timeout is None else timeout)
        fds = self._fds
        for fd, mask in events:
            handle = fds.get(fd)
            if handle is None:
                continue
            if mask & (_OUT | _ERR):
                if handle.write_op is not None:
                    self._retry_write(handle)
                    if handle.closed:
                        continue
                on_writable = handle.on_writable
                if on_writable is not None:
                    handle.on_writable = None
                    self._update(handle)
                    on_writable(mask)
                    if handle.closed:
                        continue
            if mask & (_IN | _ERR):
                if handle.on_data is not None:
                    self._read(handle)
                elif handle.on_accept is not None:
                    self._accept(handle)
                elif handle.recv_into is not None:
                    self._read_into(handle)
                if handle.closed:
                    continue
                on_readable = handle.on_readable
                if on_readable is not None:
                    handle.on_readable = None
                    self._update(handle)
                    on_readable(mask)
        # Completions queued while attempting operations at once; those queued
        # by the callbacks below wait for the next turn, keeping turns bounded.
        for _ in range(len(ready)):
            handle, callback, result = ready.popleft()
            if not handle.closed:
                callback(result)

    def _retry_write(self, handle: _Fd) -> None:
        assert handle.write_op is not None
        result = handle.write_op()
        if result is None:
            return
        on_written = handle.on_written
        handle.write_op = handle.on_written = None
        self._update(handle)
        assert on_written is not None
        on_written(result)

    def _read(self, handle: _Fd) -> None:
        try:
            data: bytes | int = os.read(handle.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            data = _errno_of(exc)
        on_data = handle.on_data
        assert on_data is not None
        if not data or data.__class__ is int:
            handle.on_data = None
            self._update(handle)
        on_data(data)

    def _read_into(self, handle: _Fd) -> None:
        assert handle.recv_into is not None
        view, on_done = handle.recv_into
        try:
            result = os.readv(handle.fd, [view])
        except BlockingIOError:
            return
        except OSError as exc:
            result = _errno_of(exc)
        handle.recv_into = None
        self._update(handle)
        on_done(result)

    def _accept(self, handle: _Fd) -> None:
        listener = handle.listener
        assert listener is not None
        for _ in range(_ACCEPT_BATCH):
            on_accept = handle.on_accept
            if on_accept is None:
                return
            try:
                # socket's own accept4 (CLOEXEC) without making a socket object.
                fd, _address = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as exc:
                result = _errno_of(exc)
            else:
                os.set_blocking(fd, False)
                result = fd
            on_accept(result)

    def shutdown(self) -> None:
        for handle in self._fds.values():
            # Forgotten, not closed: close() still closes the descriptor.
            handle.mask = 0
            handle.on_data = handle.on_accept = handle.write_op = None
            handle.on_readable = handle.on_writable = handle.recv_into = None
            if handle.listener is not None:
                handle.listener.detach()
                handle.listener = None
        self._fds.clear()
        self._ready.clear()
        self._epoll.close()
