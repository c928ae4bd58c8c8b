"""Completions emulated on top of epoll readiness.

Used where io_uring is missing or forbidden (seccomp in containers). Each
operation is first tried at once on the non-blocking descriptor; only when the
kernel says EAGAIN does it wait for readiness. Either way its completion is
queued and delivered from :meth:`EpollEngine.poll`, as the contract requires.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from typing import Callable, Sequence

from .base import READ_CHUNK, Buffer, DataCallback, Engine, ResultCallback

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
# Accepting in batches keeps a connection storm from starving established
# connections, while amortising the epoll round trip.
_ACCEPT_BATCH = 32


def _errno_of(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


class _Fd:
    """What is pending on one descriptor."""

    __slots__ = ("fd", "on_accept", "listener", "on_data", "write_op", "mask", "closed")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.on_accept: ResultCallback | None = None
        self.listener: socket.socket | None = None
        self.on_data: DataCallback | None = None
        # A zero-argument attempt returning a result, or None while it would block.
        self.write_op: Callable[[], int | None] | None = None
        self.mask = 0
        self.closed = False


class EpollEngine(Engine):
    name = "epoll"

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, _Fd] = {}
        # Completions waiting for the next poll: (state, callback, result).
        self._ready: deque[tuple[_Fd, Callable, object]] = deque()

    # -- registration -----------------------------------------------------
    def _state(self, fd: int) -> _Fd:
        state = self._fds.get(fd)
        if state is None:
            state = self._fds[fd] = _Fd(fd)
        return state

    def _update(self, state: _Fd) -> None:
        mask = 0
        if state.on_accept is not None or state.on_data is not None:
            mask |= _IN
        if state.write_op is not None:
            mask |= _OUT
        if mask == state.mask:
            return
        if state.mask == 0:
            self._epoll.register(state.fd, mask)
        elif mask == 0:
            self._epoll.unregister(state.fd)
        else:
            self._epoll.modify(state.fd, mask)
        state.mask = mask

    # -- operations ---------------------------------------------------------
    def accept(self, listen_fd: int, on_accept: ResultCallback) -> None:
        state = self._state(listen_fd)
        state.on_accept = on_accept
        # socket(fileno=...) lets us use accept4 through the stdlib; detached
        # in stop_accepting so the caller keeps ownership of the descriptor.
        state.listener = socket.socket(fileno=listen_fd)
        self._update(state)

    def stop_accepting(self, listen_fd: int) -> None:
        state = self._fds.get(listen_fd)
        if state is None or state.on_accept is None:
            return
        state.on_accept = None
        state.listener.detach()
        state.listener = None
        self._update(state)
        if state.mask == 0:
            state.closed = True
            del self._fds[listen_fd]

    def start_reading(self, fd: int, on_data: DataCallback) -> None:
        state = self._state(fd)
        state.on_data = on_data
        self._update(state)

    def stop_reading(self, fd: int) -> None:
        state = self._fds.get(fd)
        if state is not None and state.on_data is not None:
            state.on_data = None
            self._update(state)

    def _start_write(self, fd: int, attempt: Callable[[], int | None],
                     on_done: ResultCallback) -> None:
        state = self._state(fd)
        if state.write_op is not None:
            raise RuntimeError(f"a send is already in flight on fd {fd}")
        result = attempt()
        if result is not None:
            self._ready.append((state, on_done, result))
            return

        def on_writable() -> int | None:
            result = attempt()
            if result is not None:
                state.write_op = None
                self._update(state)
                on_done(result)
            return result

        state.write_op = on_writable
        self._update(state)

    def send(self, fd: int, data: Buffer, on_sent: ResultCallback) -> None:
        # Tried at once, inline: this is the per-response hot path, and a
        # socket with room in its buffer is by far the common case.
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

            self._start_write(fd, attempt, on_sent)
            return
        except OSError as exc:
            result = _errno_of(exc)
        self._ready.append((self._state(fd), on_sent, result))

    def sendmsg(self, fd: int, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        def attempt() -> int | None:
            try:
                return os.writev(fd, buffers)
            except BlockingIOError:
                return None
            except OSError as exc:
                return _errno_of(exc)

        self._start_write(fd, attempt, on_sent)

    def sendfile(self, fd: int, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        def attempt() -> int | None:
            try:
                return os.sendfile(fd, file_fd, offset, count)
            except BlockingIOError:
                return None
            except OSError as exc:
                return _errno_of(exc)

        self._start_write(fd, attempt, on_sent)

    def connect(self, fd: int, address: tuple, on_connected: ResultCallback) -> None:
        sock = socket.socket(fileno=fd)
        try:
            err = sock.connect_ex(address)
        except OSError as exc:
            err = exc.errno or errno.EIO
        finally:
            sock.detach()
        if err not in (errno.EINPROGRESS, errno.EAGAIN):
            state = self._state(fd)
            self._ready.append((state, on_connected, -err))
            return

        state = self._state(fd)
        if state.write_op is not None:
            raise RuntimeError(f"an operation is already in flight on fd {fd}")

        def on_writable() -> int:
            state.write_op = None
            self._update(state)
            result = -_pending_socket_error(fd)
            on_connected(result)
            return result

        state.write_op = on_writable
        self._update(state)

    def close(self, fd: int) -> None:
        state = self._fds.pop(fd, None)
        if state is not None:
            state.closed = True
            if state.mask:
                self._epoll.unregister(fd)
            if state.listener is not None:
                state.listener.detach()
        os.close(fd)

    # -- the loop ---------------------------------------------------------
    def poll(self, timeout: float | None) -> None:
        ready = self._ready
        if ready:
            timeout = 0
        events = self._epoll.poll(-1 if timeout is None else timeout)
        fds = self._fds
        for fd, mask in events:
            state = fds.get(fd)
            if state is None:
                continue
            if mask & (_OUT | _ERR) and state.write_op is not None:
                state.write_op()
                if state.closed:
                    continue
            if mask & (_IN | _ERR):
                if state.on_data is not None:
                    self._read(state)
                elif state.on_accept is not None:
                    self._accept(state)
        # Completions queued while attempting operations at once; those queued
        # by the callbacks below wait for the next turn, keeping turns bounded.
        for _ in range(len(ready)):
            state, callback, result = ready.popleft()
            if not state.closed:
                callback(result)

    def _read(self, state: _Fd) -> None:
        try:
            data = os.read(state.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            data = _errno_of(exc)
        on_data = state.on_data
        if not data or data.__class__ is int:
            state.on_data = None
            self._update(state)
        on_data(data)

    def _accept(self, state: _Fd) -> None:
        listener = state.listener
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, _address = listener._accept()
            except BlockingIOError:
                return
            except OSError as exc:
                result = _errno_of(exc)
            else:
                os.set_blocking(fd, False)
                result = fd
            state.on_accept(result)
            if state.on_accept is None:
                return

    def shutdown(self) -> None:
        for state in self._fds.values():
            state.closed = True
            if state.listener is not None:
                state.listener.detach()
        self._fds.clear()
        self._ready.clear()
        self._epoll.close()


def _pending_socket_error(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.detach()
