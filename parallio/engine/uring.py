"""The io_uring engine: pure Python over ctypes system calls and mmap'd rings.

Shape of one loop turn (:meth:`UringEngine.poll`):

1. results that must not be delivered from the submitting call (synchronous
   sendfile results, data held back while reading was paused) are delivered;
2. ONE ``io_uring_enter`` submits every entry queued since the last turn and
   waits for completions (timeout passed through EXT_ARG);
3. the completion ring is copied out in one slice, its head released, and
   each completion dispatched to the handle its ``user_data`` names.

``user_data`` is ``handle id << 8 | sequence << 4 | kind``. Handle ids never
repeat, and a closed handle leaves the id table at once, so a completion for
a closed descriptor finds nothing and is dropped even when the kernel has
given the number to a new socket. The per-kind sequence number tells a read
(or readiness wait) that was cancelled and re-armed in the same turn from its
successor. Each handle keeps the callback of its one write in flight and of
its one armed read, so completing an operation costs one dict lookup and no
allocation.

Reads use multishot recv with a provided-buffer ring; bytes are copied out of
the kernel-owned buffer and the buffer is handed back at once. Sends keep one
IORING_OP_SEND per descriptor in flight and never suppress its completion
(suppressing successful send completions reordered data under backpressure).
Closing queues a cancel-by-descriptor and an IORING_OP_CLOSE behind it: the
number stays taken until the cancel has run, with no system call of its own.

Memory ordering: the rings are read and written with plain loads and stores.
That is sound on x86-64 (TSO). Elsewhere the engine only runs with
DEFER_TASKRUN, under which completions are posted only inside this thread's
own ``io_uring_enter``, which orders them; without it, ``auto`` uses epoll.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import socket
import struct
from typing import Any, Iterator, Sequence

from .. import _sockets
from . import _uring_abi as abi
from .base import READ_CHUNK, Buffer, DataCallback, Engine, Handle, ResultCallback

_U32 = 0xFFFFFFFF
_GETEVENTS = abi.IORING_ENTER_GETEVENTS
_NR_ENTER = abi.NR_IO_URING_ENTER
_syscall = abi.syscall
_pack_sqe = abi.SQE.pack_into
_pack_buffer = abi.BUF_ENTRY.pack_into
_iter_cqes = abi.CQE.iter_unpack
_F_MORE = abi.IORING_CQE_F_MORE
_F_BUFFER = abi.IORING_CQE_F_BUFFER
_BUFFER_ID_SHIFT = abi.IORING_CQE_BUFFER_SHIFT
_OP_SEND = abi.IORING_OP_SEND
# The kernel moves at most this much per call (MAX_RW_COUNT); longer sends
# are partial sends, and the length must fit the SQE's 32-bit field.
_MAX_SEND = 0x7FFFF000
_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_MSG_NOSIGNAL = socket.MSG_NOSIGNAL

# Kinds of completion, the low four bits of user_data.
_RECV = 0        # the armed (multishot) recv
_WRITE = 1       # send, sendmsg, connect: on_written(res)
_ACCEPT = 2      # the armed (multishot) accept
_SENDFILE = 3    # POLLOUT wait of a sendfile that would block
_READABLE = 4    # wait_readable
_WRITABLE = 5    # wait_writable
_RECV_INTO = 6   # recv_into
_KIND_MASK = 0xF
_SEQ_MASK = 0xF

# Setup flag sets, best first. DEFER_TASKRUN runs completion work only when
# this thread asks for events; COOP_TASKRUN avoids interrupting it for that
# work. Both need SINGLE_ISSUER, hence R_DISABLED: the ring gets its single
# issuer when first entered, so it may be built on one thread and driven by
# another. SUBMIT_ALL keeps one bad entry from holding back the rest.
_DEFERRED = (abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_DEFER_TASKRUN
             | abi.IORING_SETUP_SUBMIT_ALL | abi.IORING_SETUP_R_DISABLED)
_SETUP_CHOICES: tuple[int, ...] = (
    _DEFERRED,
    abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_COOP_TASKRUN
    | abi.IORING_SETUP_SUBMIT_ALL | abi.IORING_SETUP_R_DISABLED,
    0,
)
if platform.machine().lower() not in ("x86_64", "amd64"):
    # Weakly ordered machines: see "Memory ordering" above.
    _SETUP_CHOICES = (_DEFERRED,)

# Accept errors that will recur on every retry: report them and stop.
_FATAL_ACCEPT_ERRORS = frozenset({
    errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EOPNOTSUPP, errno.EFAULT,
})
# io_uring_enter failures that only mean "nothing more this time".
_BENIGN_ENTER_ERRORS = frozenset({errno.ETIME, errno.EINTR, errno.EBUSY, errno.EAGAIN})

# Read-only buffers smaller than this are copied rather than looked up
# through the buffer protocol: its two ctypes calls cost what copying
# about 32 KiB does.
_COPY_LIMIT = 32 * 1024

# Gather-sends up to this size are joined and sent as one buffer.
_JOIN_LIMIT = 16 * 1024

_c_char_p = ctypes.c_char_p
_pointer_slot = ctypes.c_void_p.from_buffer


def _address_of_pointer(pointer: ctypes.c_char_p) -> int:
    """The address a ``c_char_p`` holds (the start of its bytes)."""
    return _pointer_slot(pointer).value or 0
_c_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def _bytes_data_offset() -> int:
    """Where a bytes object's contents start, from the object's address.

    ``id()`` is that address in CPython, and the offset is the same for
    every bytes object of one build; it is measured here, through ctypes,
    rather than assumed (it differs between builds: free-threaded objects
    have a larger header). Checked on two objects of different sizes."""
    offsets = set()
    for probe in (b"parallio", b"x" * 4097):
        offsets.add(_address_of_pointer(_c_char_p(probe)) - id(probe))
    if len(offsets) != 1:
        raise ImportError("bytes objects' contents are not at a fixed offset here")
    return offsets.pop()


#: ``id(data) + _BYTES_DATA`` is where the contents of ``data`` are: the cheapest
#: way from a bytes object to the address a send takes.
_BYTES_DATA = _bytes_data_offset()


def _pin(buffer: Buffer) -> tuple[object, int, int]:
    """Return (keep-alive object, address, length) for a buffer to send.

    ``bytes`` are sent in place (they are immutable, and the caller keeps
    them alive until the completion). Writable contiguous buffers are exported to ctypes
    (which also stops a bytearray from being resized under the kernel).
    Other read-only buffers -- typically ``memoryview(data)[sent:]``, the
    rest of a partial send -- are copied when small, and reached through
    the buffer protocol when copying would cost more than that call.
    """
    if type(buffer) is bytes:
        return buffer, id(buffer) + _BYTES_DATA, len(buffer)
    view = memoryview(buffer)
    length = view.nbytes
    if not length:
        return None, 0, 0
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.readonly:
        if length >= _COPY_LIMIT:
            return view, abi.readonly_address(view), length
        pointer = _c_char_p(view.tobytes())
        return pointer, _address_of_pointer(pointer), length
    if view.format != "B":
        view = view.cast("B")
    pinned = _c_char_from_buffer(view)
    return pinned, _addressof(pinned), length


class _Handle(Handle):
    """What the engine knows of one descriptor: connected, listening or
    neither yet. Callback slots are None when nothing of that kind waits."""

    __slots__ = (
        "id", "closed", "on_data", "sink", "paused", "ended", "recv_armed", "recv_seq", "backlog",
        "on_written", "write_pin", "sendfile_args", "on_accept", "accepting", "accepted",
        "on_readable", "on_writable", "wait_seq", "on_recv_into", "recv_into_pin",
        "buffer", "buffer_view", "buffer_address",
    )

    def __init__(self, handle_id: int, fd: int) -> None:
        self.id = handle_id
        self.fd = fd
        #: The descriptor was closed (or handed back) through the engine.
        self.closed = False
        self.on_data: DataCallback | None = None
        #: ``on_data`` while chunks may go straight to it (reading, not
        #: paused, nothing held back), else None: the one test per chunk.
        self.sink: DataCallback | None = None
        self.paused = False
        #: EOF or an error was received: reading is over for good.
        self.ended = False
        self.recv_armed = False
        self.recv_seq = 0
        #: Received but undelivered chunks (then b"" or -errno at the end).
        self.backlog: list[bytes | int] | None = None
        self.on_written: ResultCallback | None = None
        self.write_pin: object = None       # what the kernel reads from
        self.sendfile_args: tuple[int, int, int] | None = None
        self.on_accept: ResultCallback | None = None
        self.accepting = False              # an accept is armed
        #: Whether an accept ever succeeded: an EINVAL before that may mean
        #: the kernel does not know multishot accept.
        self.accepted = False
        self.on_readable: ResultCallback | None = None
        self.on_writable: ResultCallback | None = None
        self.wait_seq = 0
        self.on_recv_into: ResultCallback | None = None
        self.recv_into_pin: object = None
        # Own receive buffer, used only where provided-buffer rings are not.
        self.buffer: bytearray | None = None
        self.buffer_view: memoryview | None = None
        self.buffer_address = 0

    def __repr__(self) -> str:
        return f"<uring handle {self.id} fd={self.fd}>"


class UringEngine(Engine[_Handle]):
    """io_uring completion engine; see the module docstring.

    The keyword arguments ``multishot``, ``buffer_ring`` and ``cancel_by_fd``
    turn off features the kernel has, to run the fallbacks older kernels get.
    """

    name = "uring"

    def __init__(self, *, entries: int = 1024, buffer_count: int = 512,
                 buffer_size: int = 16 * 1024, multishot: bool = True,
                 buffer_ring: bool = True, cancel_by_fd: bool = True) -> None:
        if not 0 < buffer_size <= READ_CHUNK:
            raise ValueError(f"buffer_size must be in 1..{READ_CHUNK}")
        # A big CQ ring (8x) so multishot bursts rarely overflow; when they do,
        # NODROP keeps the completions in the kernel until _reap flushes them.
        ring = self._setup(entries, entries * 8)
        #: None once torn down.
        self._ring: abi.Ring | None = ring
        #: The IORING_SETUP_* flags the kernel accepted.
        self.setup_flags: int = ring.setup_flags
        #: The IORING_FEAT_* flags the kernel reported.
        self.features: int = ring.features

        self._buffers: abi.BufferRing | None = None
        if buffer_ring:
            try:
                self._buffers = abi.BufferRing(ring.fd, 0, buffer_count, buffer_size)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    ring.close()
                    raise
        if self._buffers is not None:
            buffers = self._buffers
            self._buffer_layout = (buffers.pool, buffers.size, buffers.base,
                                   buffers.mask, buffers.entries)
        self.uses_buffer_ring = self._buffers is not None
        #: Cancelling by descriptor arrived in Linux 5.19 with provided-buffer
        #: rings: a successful registration vouches for it.
        self.cancels_by_fd = cancel_by_fd and self.uses_buffer_ring
        # Multishot accept (5.19) and recv (6.0, and only with a buffer ring)
        # fall back to single-shot when the kernel answers EINVAL.
        self._accept_ioprio = abi.IORING_ACCEPT_MULTISHOT if multishot else 0
        self._recv_ioprio = (abi.IORING_RECV_MULTISHOT
                             if multishot and self.uses_buffer_ring else 0)

        # Flat copies of what the loop reads, to spare it attribute chains.
        self._ring_fd = ring.fd
        self._words: memoryview | None = ring.words
        self._ring_map = ring.ring
        self._sqes = ring.sqes
        self._sq_mask = ring.sq_mask
        self._sq_entries = ring.sq_entries
        self._sq_head_word = ring.sq_head
        self._sq_tail_word = ring.sq_tail
        self._sq_flags_word = ring.sq_flags
        self._cq_head_word = ring.cq_head
        self._cq_tail_word = ring.cq_tail
        self._cq_mask = ring.cq_mask
        self._cqes_start = ring.cqes
        self._cqes_end = ring.cqes + ring.cq_entries * abi.CQE_SIZE
        self._sq_tail = 0
        self._sq_submitted = 0               # tail value the kernel has consumed up to
        self._sq_limit = ring.sq_entries   # tail value at which the SQ is full
        self._cq_head = 0
        self._disabled = bool(self.setup_flags & abi.IORING_SETUP_R_DISABLED)

        self._timespec = abi.KernelTimespec()
        self._timespec_for: float | None = None   # the timeout it holds
        self._getevents = abi.GetEventsArg(ts=ctypes.addressof(self._timespec))
        self._getevents_pointer = ctypes.c_void_p(ctypes.addressof(self._getevents))
        self._getevents_size = ctypes.c_size_t(ctypes.sizeof(abi.GetEventsArg))

        #: Live handles by id; user_data 0 (cancels, closes) names none.
        self._handles: dict[int, _Handle] = {}
        self._next_id = 1
        #: (handle, callback, value) to run at the start of the next poll;
        #: callback None means "deliver the handle's backlog".
        self._soon: list[tuple[_Handle, ResultCallback | None, int]] = []
        #: Completions copied out of the ring but not yet dispatched because a
        #: callback raised; the next poll resumes them first.
        self._leftover: Iterator[tuple[int, int, int]] | None = None
        self._polling = False
        self._shutdown_requested = False

    @staticmethod
    def _setup(sq_entries: int, cq_entries: int) -> abi.Ring:
        for flags in _SETUP_CHOICES:
            try:
                ring = abi.Ring(sq_entries, cq_entries, flags)
            except OSError as exc:
                if exc.errno != errno.EINVAL or flags == _SETUP_CHOICES[-1]:
                    raise
            else:
                return ring
        raise AssertionError("unreachable: the last choice raises or returns")

    # -- submission queue -------------------------------------------------

    def _push(self, opcode: int, fd: int, addr: int, length: int, op_flags: int,
              user_data: int, off: int = 0, ioprio: int = 0, sqe_flags: int = 0,
              buf_group: int = 0) -> None:
        tail = self._sq_tail
        if tail == self._sq_limit:
            tail = self._make_room()
        _pack_sqe(self._sqes, (tail & self._sq_mask) << 6, opcode, sqe_flags,
                  ioprio, fd, off, addr, length, op_flags, user_data, buf_group)
        self._sq_tail = tail + 1

    def _make_room(self) -> int:
        """The SQ is full mid-turn: submit without waiting; return the tail."""
        self._enter(0, 0, None)
        if self._sq_tail == self._sq_limit:
            raise OSError(errno.EBUSY, "io_uring submission queue full and not draining")
        return self._sq_tail

    def _enter(self, min_complete: int, flags: int, arg: ctypes.c_void_p | None) -> None:
        """Submit everything queued and, with GETEVENTS, run completion work
        and wait for ``min_complete`` completions."""
        if self._disabled:
            # The thread entering first becomes the ring's single issuer.
            abi.io_uring_register(self._ring_fd, abi.IORING_REGISTER_ENABLE_RINGS, None, 0)
            self._disabled = False
        words = self._words
        assert words is not None
        tail = self._sq_tail
        to_submit = tail - self._sq_submitted
        if to_submit:
            words[self._sq_tail_word] = tail & _U32
        if arg is None:
            result = _syscall(_NR_ENTER, self._ring_fd, to_submit, min_complete, flags, None)
        else:
            result = _syscall(_NR_ENTER, self._ring_fd, to_submit, min_complete, flags, arg,
                              self._getevents_size)
        if to_submit and result != to_submit:
            # Without SUBMIT_ALL the kernel stops at a bad entry; the rest
            # goes with the next enter.
            tail -= (tail - words[self._sq_head_word]) & _U32
        self._sq_submitted = tail
        self._sq_limit = tail + self._sq_entries
        if result < 0:
            err = abi.get_errno()
            if err not in _BENIGN_ENTER_ERRORS:
                raise OSError(err, os.strerror(err))

    def _cancel(self, user_data: int) -> None:
        self._push(abi.IORING_OP_ASYNC_CANCEL, -1, user_data, 0, 0, 0)

    # -- handles ----------------------------------------------------------

    def open(self, fd: int) -> _Handle:
        handle_id = self._next_id
        self._next_id = handle_id + 1
        handle = self._handles[handle_id] = _Handle(handle_id, fd)
        return handle

    def _forget(self, handle: _Handle) -> bool:
        """Drop ``handle``; returns whether the kernel may still hold an
        operation on it."""
        if self._handles.pop(handle.id, None) is None:
            return False
        handle.sink = None
        handle.on_data = None
        handle.backlog = None
        handle.on_accept = None
        in_flight = (handle.recv_armed or handle.accepting or handle.on_written is not None
                     or handle.sendfile_args is not None or handle.on_readable is not None
                     or handle.on_writable is not None or handle.on_recv_into is not None)
        handle.on_written = handle.on_readable = handle.on_writable = None
        handle.on_recv_into = None
        handle.sendfile_args = None
        handle.recv_armed = handle.accepting = False
        return in_flight

    def _cancel_all(self, handle: _Handle) -> None:
        if self.cancels_by_fd:
            self._push(abi.IORING_OP_ASYNC_CANCEL, handle.fd, 0, 0,
                       abi.IORING_ASYNC_CANCEL_FD | abi.IORING_ASYNC_CANCEL_ALL, 0)
            return
        base = handle.id << 8
        for kind in (_RECV, _WRITE, _ACCEPT, _SENDFILE, _READABLE, _WRITABLE, _RECV_INTO):
            seq = handle.recv_seq if kind == _RECV else (
                handle.wait_seq if kind in (_READABLE, _WRITABLE) else 0)
            self._cancel(base | seq << 4 | kind)

    def release(self, handle: _Handle) -> None:
        if handle.closed:
            return
        handle.closed = True
        if self._forget(handle):
            self._cancel_all(handle)
        if self._sq_tail != self._sq_submitted:
            # The owner may close the descriptor as soon as this returns:
            # what was queued for it (a cancel, a shutdown) must reach the
            # kernel before the number can be reused.
            self._enter(0, _GETEVENTS, None)

    def close(self, handle: _Handle) -> None:
        if handle.closed:
            return
        handle.closed = True
        in_flight = self._forget(handle)
        if self._ring is None:
            os.close(handle.fd)
            return
        if in_flight:
            self._cancel_all(handle)
        if self.cancels_by_fd:
            # Queued behind whatever else this turn queued for the
            # descriptor (a cancel, a shutdown): the number stays taken until
            # nothing of ours can reach a new socket given the same number.
            self._push(abi.IORING_OP_CLOSE, handle.fd, 0, 0, 0, 0)
            return
        # Older kernels: the cancels must reach the kernel, and running
        # completion work lets the cancelled requests drop their hold on the
        # socket, before the number is freed.
        self._enter(0, _GETEVENTS, None)
        os.close(handle.fd)

    # -- accept -----------------------------------------------------------

    def accept(self, handle: _Handle, on_accept: ResultCallback) -> None:
        handle.on_accept = on_accept
        if not handle.accepting:
            self._arm_accept(handle)

    def _arm_accept(self, handle: _Handle) -> None:
        handle.accepting = True
        self._push(abi.IORING_OP_ACCEPT, handle.fd, 0, 0, _ACCEPT_FLAGS,
                   handle.id << 8 | _ACCEPT, ioprio=self._accept_ioprio)

    def stop_accepting(self, handle: _Handle) -> None:
        handle.on_accept = None
        if handle.accepting:
            handle.accepting = False
            self._cancel(handle.id << 8 | _ACCEPT)

    def _accepted(self, handle: _Handle, res: int, flags: int) -> None:
        final = not flags & _F_MORE
        on_accept = handle.on_accept
        if on_accept is None:
            # Accepted after stop_accepting: nobody will take it.
            if res >= 0:
                os.close(res)
            return
        if final:
            handle.accepting = False
        if res >= 0:
            handle.accepted = True
            if final:
                self._arm_accept(handle)
            on_accept(res)
            return
        if res == -errno.EINVAL and self._accept_ioprio and not handle.accepted:
            self._accept_ioprio = 0   # kernel without multishot accept
            self._arm_accept(handle)
            return
        if -res in _FATAL_ACCEPT_ERRORS:
            handle.on_accept = None
            if handle.accepting:
                handle.accepting = False
                self._cancel(handle.id << 8 | _ACCEPT)
        elif final:
            self._arm_accept(handle)
        on_accept(res)

    # -- reading ----------------------------------------------------------

    def start_reading(self, handle: _Handle, on_data: DataCallback) -> None:
        handle.on_data = on_data
        handle.paused = False
        if handle.backlog:
            self._soon.append((handle, None, 0))
        elif not handle.ended:
            handle.sink = on_data
        if not handle.recv_armed and not handle.ended:
            self._arm_recv(handle)

    def stop_reading(self, handle: _Handle) -> None:
        handle.paused = True
        handle.sink = None
        if handle.recv_armed:
            # Chunks completing before the cancel lands go to the backlog;
            # the cancelled recv's last completion carries the old sequence.
            handle.recv_armed = False
            self._cancel(handle.id << 8 | handle.recv_seq << 4 | _RECV)

    def _arm_recv(self, handle: _Handle) -> None:
        seq = handle.recv_seq = (handle.recv_seq + 1) & _SEQ_MASK
        handle.recv_armed = True
        user_data = handle.id << 8 | seq << 4 | _RECV
        if self._buffers is not None:
            self._push(abi.IORING_OP_RECV, handle.fd, 0, 0, 0, user_data,
                       ioprio=self._recv_ioprio, sqe_flags=abi.IOSQE_BUFFER_SELECT,
                       buf_group=self._buffers.group)
            return
        if handle.buffer is None:
            handle.buffer = bytearray(READ_CHUNK)
            handle.buffer_view = memoryview(handle.buffer)
            handle.buffer_address = abi.address_of(handle.buffer)
        self._push(abi.IORING_OP_RECV, handle.fd, handle.buffer_address, READ_CHUNK, 0,
                   user_data)

    def _recv_ended(self, handle: _Handle, res: int, current: bool) -> None:
        """A recv completed without data: EOF, an error, a cancel, or no
        buffer left. ``current``: it is the recv armed now."""
        if res == -errno.ECANCELED or res == -errno.ENOBUFS:
            if current:
                # The buffer ring ran dry (it is refilled before the next
                # enter), or the kernel ended the multishot: resume.
                handle.recv_armed = False
                if not handle.paused and handle.on_data is not None:
                    self._arm_recv(handle)
            return
        if res == -errno.EINVAL and self._recv_ioprio and current:
            self._recv_ioprio = 0   # kernel without multishot recv
            handle.recv_armed = False
            if not handle.paused and handle.on_data is not None:
                self._arm_recv(handle)
            return
        if current:
            handle.recv_armed = False
        if handle.ended:
            return   # the end was reported already (by a cancelled recv)
        handle.ended = True
        event = res if res else b""
        sink = handle.sink
        if sink is None:
            if handle.backlog is None:
                handle.backlog = []
            handle.backlog.append(event)
            return
        handle.sink = None
        sink(event)

    def _deliver_backlog(self, handle: _Handle) -> None:
        backlog = handle.backlog
        while backlog and handle.on_data is not None and not handle.paused:
            handle.on_data(backlog.pop(0))
        if not backlog and not handle.paused and not handle.ended:
            handle.sink = handle.on_data
            handle.backlog = None

    def recv_into(self, handle: _Handle, buffer: Buffer, on_done: ResultCallback) -> None:
        view = memoryview(buffer).cast("B")
        pinned = _c_char_from_buffer(view)
        handle.on_recv_into = on_done
        handle.recv_into_pin = pinned
        self._push(abi.IORING_OP_RECV, handle.fd, _addressof(pinned), min(len(view), _MAX_SEND),
                   0, handle.id << 8 | _RECV_INTO)

    def shutdown_write(self, handle: _Handle) -> None:
        # A system call, not IORING_OP_SHUTDOWN: that one always runs in the
        # kernel's worker threads, which look the descriptor up only then --
        # after a close queued behind it, possibly on a new socket given the
        # same number. Every send has completed when this is called.
        _sockets.shutdown_write(handle.fd)

    # -- readiness --------------------------------------------------------

    def wait_readable(self, handle: _Handle, callback: ResultCallback) -> None:
        handle.on_readable = callback
        self._push(abi.IORING_OP_POLL_ADD, handle.fd, 0, 0, abi.POLLIN,
                   handle.id << 8 | handle.wait_seq << 4 | _READABLE)

    def wait_writable(self, handle: _Handle, callback: ResultCallback) -> None:
        handle.on_writable = callback
        self._push(abi.IORING_OP_POLL_ADD, handle.fd, 0, 0, abi.POLLOUT,
                   handle.id << 8 | handle.wait_seq << 4 | _WRITABLE)

    def cancel_waits(self, handle: _Handle) -> None:
        base = handle.id << 8 | handle.wait_seq << 4
        if handle.on_readable is not None:
            handle.on_readable = None
            self._cancel(base | _READABLE)
        if handle.on_writable is not None:
            handle.on_writable = None
            self._cancel(base | _WRITABLE)
        handle.wait_seq = (handle.wait_seq + 1) & _SEQ_MASK

    # -- writing ----------------------------------------------------------

    def send(self, handle: _Handle, data: Buffer, on_sent: ResultCallback) -> None:
        handle.on_written = on_sent
        tail = self._sq_tail
        if tail == self._sq_limit:
            tail = self._make_room()
        slot = tail & self._sq_mask
        if type(data) is bytes:
            # Sent in place; the handle keeps them alive until the completion.
            _pack_sqe(self._sqes, slot << 6, _OP_SEND, 0, 0, handle.fd, 0, id(data) + _BYTES_DATA,
                      min(len(data), _MAX_SEND), _MSG_NOSIGNAL, handle.id << 8 | _WRITE, 0)
            handle.write_pin = data
        else:
            pinned, address, length = _pin(data)
            _pack_sqe(self._sqes, slot << 6, _OP_SEND, 0, 0, handle.fd, 0, address,
                      min(length, _MAX_SEND), _MSG_NOSIGNAL, handle.id << 8 | _WRITE, 0)
            handle.write_pin = pinned
        self._sq_tail = tail + 1

    def sendmsg(self, handle: _Handle, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        if sum(map(len, buffers)) <= _JOIN_LIMIT:
            # Copying a few small pieces into one costs less than pinning
            # each of them for an iovec.
            self.send(handle, b"".join(buffers), on_sent)
            return
        # Past IOV_MAX the kernel refuses the whole call; sending the first
        # IOV_MAX buffers is a partial send, which the contract allows.
        buffers = buffers[:abi.IOV_MAX]
        block = bytearray(abi.MSGHDR.size + abi.IOVEC.size * len(buffers))
        block_pin = _c_char_from_buffer(block)
        base = _addressof(block_pin)
        pins: list[object] = [block_pin]
        offset = abi.MSGHDR.size
        for buffer in buffers:
            pinned, address, length = _pin(buffer)
            abi.IOVEC.pack_into(block, offset, address, length)
            pins.append(pinned)
            offset += abi.IOVEC.size
        abi.MSGHDR.pack_into(block, 0, base + abi.MSGHDR.size, len(buffers))
        handle.on_written = on_sent
        handle.write_pin = pins
        self._push(abi.IORING_OP_SENDMSG, handle.fd, base, 1, _MSG_NOSIGNAL,
                   handle.id << 8 | _WRITE)

    def sendfile(self, handle: _Handle, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        # os.sendfile on the non-blocking socket, waiting for POLLOUT through
        # the ring only when it would block. Chosen over splice (file -> pipe
        # -> socket as linked SQEs) because a partial splice strands bytes in
        # the pipe that must be drained or discarded exactly; sendfile moves
        # the same pages with nothing to reconcile. Page-cache misses block
        # this thread, as they would inside splice's io-wq worker.
        try:
            sent = os.sendfile(handle.fd, file_fd, offset, count)
        except BlockingIOError:
            self._wait_writable_for_file(handle, on_sent, (file_fd, offset, count))
        except OSError as exc:
            self._soon.append((handle, on_sent, -(exc.errno or errno.EIO)))
        else:
            self._soon.append((handle, on_sent, sent))

    def _wait_writable_for_file(self, handle: _Handle, on_sent: ResultCallback,
                                args: tuple[int, int, int]) -> None:
        handle.on_written = on_sent
        handle.sendfile_args = args
        self._push(abi.IORING_OP_POLL_ADD, handle.fd, 0, 0, abi.POLLOUT,
                   handle.id << 8 | _SENDFILE)

    def _file_writable(self, handle: _Handle, res: int) -> None:
        on_sent = handle.on_written
        args = handle.sendfile_args
        handle.on_written = None
        handle.sendfile_args = None
        assert on_sent is not None and args is not None
        if res < 0:
            on_sent(res)
            return
        file_fd, offset, count = args
        try:
            sent = os.sendfile(handle.fd, file_fd, offset, count)
        except BlockingIOError:
            self._wait_writable_for_file(handle, on_sent, args)
            return
        except OSError as exc:
            sent = -(exc.errno or errno.EIO)
        on_sent(sent)

    def connect(self, handle: _Handle, address: tuple[Any, ...], on_connected: ResultCallback) -> None:
        sockaddr = bytearray(_sockaddr(handle.fd, address))
        pinned = _c_char_from_buffer(sockaddr)
        handle.on_written = on_connected
        handle.write_pin = pinned
        self._push(abi.IORING_OP_CONNECT, handle.fd, _addressof(pinned), 0, 0,
                   handle.id << 8 | _WRITE, off=len(sockaddr))

    # -- the loop ---------------------------------------------------------

    def poll(self, timeout: float | None) -> None:
        words = self._words
        if words is None:
            raise RuntimeError("the io_uring engine was shut down")
        self._polling = True
        try:
            if self._leftover is not None:
                self._dispatch(self._leftover)
            if self._soon:
                self._run_soon()
            if self._soon or (timeout is not None and timeout <= 0):
                self._enter(0, _GETEVENTS, None)
            elif timeout is None:
                self._enter(1, _GETEVENTS, None)
            else:
                if timeout != self._timespec_for:
                    timespec = self._timespec
                    seconds = int(timeout)
                    timespec.tv_sec = seconds
                    timespec.tv_nsec = int((timeout - seconds) * 1e9)
                    self._timespec_for = timeout
                self._enter(1, _GETEVENTS | abi.IORING_ENTER_EXT_ARG, self._getevents_pointer)
            if (words[self._cq_tail_word] != self._cq_head
                    or words[self._sq_flags_word] & abi.IORING_SQ_CQ_OVERFLOW):
                self._reap()
        finally:
            self._polling = False
            if self._shutdown_requested:
                self._teardown()

    def _run_soon(self) -> None:
        soon, self._soon = self._soon, []
        handles = self._handles
        for index, (handle, callback, value) in enumerate(soon):
            try:
                if handles.get(handle.id) is not handle:
                    continue   # released or closed meanwhile
                if callback is None:
                    self._deliver_backlog(handle)
                else:
                    callback(value)
            except BaseException:
                # A backlog delivery resumes where it stopped; a result
                # callback that raised has been called and is not repeated.
                resume_at = index if callback is None else index + 1
                self._soon[:0] = soon[resume_at:]
                raise

    def _reap(self) -> None:
        words = self._words
        assert words is not None
        while True:
            head = self._cq_head
            tail = words[self._cq_tail_word]
            if tail != head:
                start = (head & self._cq_mask) * abi.CQE_SIZE + self._cqes_start
                end = start + ((tail - head) & _U32) * abi.CQE_SIZE
                ring_end = self._cqes_end
                mapping = self._ring_map
                if end <= ring_end:
                    batch = mapping[start:end]
                else:
                    batch = (mapping[start:ring_end]
                             + mapping[self._cqes_start:end - ring_end + self._cqes_start])
                # Copied out: the slots go back to the kernel before any
                # callback runs, and the copy is the leftover until dispatched.
                self._leftover = completions = _iter_cqes(batch)
                words[self._cq_head_word] = self._cq_head = tail
                self._dispatch(completions)
            if not words[self._sq_flags_word] & abi.IORING_SQ_CQ_OVERFLOW:
                return
            # Completions wait in the kernel's overflow list (NODROP); asking
            # for events moves them into the now-empty ring.
            self._enter(0, _GETEVENTS, None)

    def _dispatch(self, completions: Iterator[tuple[int, int, int]]) -> None:
        # Left set if a callback raises: the next poll resumes here.
        self._leftover = completions
        handles_get = self._handles.get
        buffers = self._buffers
        if buffers is not None:
            pool, buffer_size, buffer_base, buffer_mask, buffer_entries = self._buffer_layout
            buffer_tail = buffers.tail
        data = b""
        try:
            for user_data, res, flags in completions:
                if flags & _F_BUFFER:
                    buffer_id = flags >> _BUFFER_ID_SHIFT
                    start = buffer_id * buffer_size
                    data = pool[start:start + res]
                    # The chunk is copied: hand the buffer straight back.
                    _pack_buffer(buffer_entries, (buffer_tail & buffer_mask) << 4,
                                 buffer_base + start, buffer_size, buffer_id)
                    buffer_tail = (buffer_tail + 1) & 0xFFFF
                handle = handles_get(user_data >> 8)
                if handle is None:
                    # A cancel's or close's own completion, or a closed
                    # handle's. A connection accepted for a listener closed
                    # meanwhile has nobody to serve it: it must not stay
                    # open, its client waiting for ever.
                    if user_data & _KIND_MASK == _ACCEPT and res >= 0:
                        os.close(res)
                    continue
                kind = user_data & _KIND_MASK
                if kind == _RECV:
                    # A recv cancelled by stop_reading may still have taken
                    # data (or seen the end) first: that is real, and comes
                    # before anything a later recv reads.
                    current = ((user_data >> 4) & _SEQ_MASK == handle.recv_seq
                               and handle.recv_armed)
                    if res <= 0:
                        self._recv_ended(handle, res, current)
                        continue
                    if not flags & _F_BUFFER:
                        assert handle.buffer_view is not None
                        data = handle.buffer_view[:res].tobytes()
                    if current and not flags & _F_MORE:
                        handle.recv_armed = False
                        if not handle.paused:
                            self._arm_recv(handle)
                    sink = handle.sink
                    if sink is not None:
                        sink(data)
                    else:
                        if handle.backlog is None:
                            handle.backlog = []
                        handle.backlog.append(data)
                elif kind == _WRITE:
                    on_written = handle.on_written
                    handle.on_written = None
                    handle.write_pin = None
                    if on_written is not None:
                        on_written(res)
                elif kind == _ACCEPT:
                    self._accepted(handle, res, flags)
                elif kind == _SENDFILE:
                    if handle.sendfile_args is not None:
                        self._file_writable(handle, res)
                elif kind == _RECV_INTO:
                    on_done = handle.on_recv_into
                    handle.on_recv_into = None
                    handle.recv_into_pin = None
                    if on_done is not None:
                        on_done(res)
                elif (user_data >> 4) & _SEQ_MASK == handle.wait_seq:
                    if kind == _READABLE:
                        on_ready = handle.on_readable
                        handle.on_readable = None
                    else:
                        on_ready = handle.on_writable
                        handle.on_writable = None
                    if on_ready is not None and res != -errno.ECANCELED:
                        on_ready(res)
        finally:
            if buffers is not None and buffer_tail != buffers.tail:
                # Published once per batch, also when a callback raised.
                buffers.tail = buffer_tail
                buffers.tail_words[buffers.TAIL_WORD] = buffer_tail
        self._leftover = None

    # -- memory -----------------------------------------------------------

    def trim(self) -> None:
        # The read buffers become resident as bursts fill them, and stay so.
        # Dropping their pages is safe only where the kernel fills provided
        # buffers inside this thread's own io_uring_enter (DEFER_TASKRUN):
        # between polls every completion has been copied out and no buffer
        # holds undelivered data; the kernel's next write faults in a zeroed
        # page.
        buffers = self._buffers
        if (buffers is None or self._polling or self._words is None
                or not self.setup_flags & abi.IORING_SETUP_DEFER_TASKRUN
                or self._words[self._cq_tail_word] != self._cq_head):
            return
        buffers.pool.madvise(mmap.MADV_DONTNEED)

    # -- teardown ---------------------------------------------------------

    def shutdown(self) -> None:
        if self._polling:
            # Called from a callback: finish the turn without more callbacks,
            # then release the rings.
            self._shutdown_requested = True
            self._handles.clear()
            self._soon.clear()
            return
        self._teardown()

    def _teardown(self) -> None:
        self._shutdown_requested = False
        ring, self._ring = self._ring, None
        if ring is None:
            return
        self._soon.clear()
        self._handles.clear()
        self._leftover = None
        if self._sq_tail != self._sq_submitted:
            # Queued closes must still happen: their descriptors are closed
            # only by the kernel running them.
            try:
                self._enter(0, _GETEVENTS, None)
            except OSError:
                pass  # the ring is going anyway; the cancels die with it
        self._words = None
        # Closing the ring cancels whatever is in flight; only then may the
        # buffers the kernel writes into be unmapped.
        ring.close()
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None


def _sockaddr(fd: int, address: tuple[Any, ...]) -> bytes:
    """Encode ``address`` as a ``struct sockaddr`` for the socket ``fd``."""
    with _sockets.borrowed(fd) as sock:
        family_number = sock.family
    if family_number == socket.AF_INET:
        host, port = address[:2]
        return (struct.pack("=H", family_number) + struct.pack("!H", port)
                + socket.inet_pton(socket.AF_INET, host) + bytes(8))
    if family_number == socket.AF_INET6:
        host, port = address[:2]
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        return (struct.pack("=H", family_number) + struct.pack("!HI", port, flowinfo)
                + socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                + struct.pack("=I", scope_id))
    if family_number == socket.AF_UNIX:
        path = address if isinstance(address, (str, bytes)) else address[0]
        raw = os.fsencode(path)
        return struct.pack("=H", family_number) + raw + (b"\0" if raw[:1] != b"\0" else b"")
    raise OSError(errno.EAFNOSUPPORT, "connect supports IPv4, IPv6 and Unix sockets")
