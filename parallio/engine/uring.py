"""The io_uring engine: pure Python over ctypes system calls and mmap'd rings.

Shape of one loop turn (:meth:`UringEngine.poll`):

1. results that must not be delivered from the submitting call (synchronous
   sendfile results, data held back while reading was paused) are delivered;
2. ONE ``io_uring_enter`` submits every entry queued since the last turn and
   waits for completions (timeout passed through EXT_ARG);
3. the completion ring is copied out in one slice, its head released, and
   each completion dispatched to the record its ``user_data`` names.

Completion records live in ``self._ops``, keyed by a counter that never
repeats, so a completion can never reach a connection that merely reuses a
closed descriptor's number. Records refer to a per-descriptor :class:`_Conn`
whose ``open`` flag :meth:`close` clears: completions already in flight for a
closed descriptor find it cleared and are dropped.

Reads use multishot recv with a provided-buffer ring; bytes are copied out of
the kernel-owned buffer and the buffer is handed back at once. Sends keep one
IORING_OP_SEND per descriptor in flight and never suppress its completion
(suppressing successful send completions reordered data under backpressure).

Memory ordering: the rings are read and written with plain loads and stores.
That is sound on x86-64 (TSO), and with DEFER_TASKRUN (the default where the
kernel allows it) completions are only ever posted inside this thread's own
``io_uring_enter`` call, which orders them on any architecture.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from typing import Iterator, Sequence

from . import _uring_abi as abi
from .base import READ_CHUNK, Buffer, DataCallback, Engine, ResultCallback

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
# The kernel moves at most this much per call (MAX_RW_COUNT); longer sends
# are partial sends, and the length must fit the SQE's 32-bit field.
_MAX_SEND = 0x7FFFF000
_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_MSG_NOSIGNAL = socket.MSG_NOSIGNAL

# Kinds of completion record; a record is a tuple (kind, owner, ...).
_RECV = 0       # (_RECV, conn)
_RESULT = 1     # (_RESULT, conn, callback, pinned memory): send, sendmsg, connect
_ACCEPT = 2     # (_ACCEPT, listener)
_SENDFILE = 3   # (_SENDFILE, conn, callback, (file_fd, offset, count)): POLLOUT wait

# Setup flag sets, best first. DEFER_TASKRUN runs completion work only when
# this thread asks for events; COOP_TASKRUN avoids interrupting it for that
# work. Both need SINGLE_ISSUER, hence R_DISABLED: the ring gets its single
# issuer when first entered, so it may be built on one thread and driven by
# another. SUBMIT_ALL keeps one bad entry from holding back the rest.
_SETUP_CHOICES = (
    abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_DEFER_TASKRUN
    | abi.IORING_SETUP_SUBMIT_ALL | abi.IORING_SETUP_R_DISABLED,
    abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_COOP_TASKRUN
    | abi.IORING_SETUP_SUBMIT_ALL | abi.IORING_SETUP_R_DISABLED,
    0,
)

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

# Sends of bytes up to this size get their address through SqeAddress.
_SMALL_SEND = 4096
# Gather-sends up to this size are joined and sent as one buffer.
_JOIN_LIMIT = 16 * 1024

_c_char_p = ctypes.c_char_p
_address_of_pointer = ctypes.c_void_p.from_buffer
_c_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def _pin(buffer: Buffer) -> tuple[object, int, int]:
    """Return (keep-alive object, address, length) for a buffer to send.

    ``bytes`` are sent in place: ``c_char_p`` points at their storage and
    keeps them alive. Writable contiguous buffers are exported to ctypes
    (which also stops a bytearray from being resized under the kernel).
    Other read-only buffers -- typically ``memoryview(data)[sent:]``, the
    rest of a partial send -- are copied when small, and reached through
    the buffer protocol when copying would cost more than that call.
    """
    if type(buffer) is bytes:
        pointer = _c_char_p(buffer)
        return pointer, _address_of_pointer(pointer).value, len(buffer)
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
        return pointer, _address_of_pointer(pointer).value, length
    if view.format != "B":
        view = view.cast("B")
    pinned = _c_char_from_buffer(view)
    return pinned, _addressof(pinned), length


class _Conn:
    """What the engine knows of one connected descriptor."""

    __slots__ = ("fd", "open", "on_data", "sink", "paused", "ended", "recv_id",
                 "write_id", "backlog", "buffer", "buffer_view", "buffer_address")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True
        self.on_data: DataCallback | None = None
        #: ``on_data`` while chunks may go straight to it (reading, not
        #: paused, nothing held back), else None: the one test per chunk.
        self.sink: DataCallback | None = None
        self.paused = False
        #: EOF or an error was received: reading is over for good.
        self.ended = False
        self.recv_id = 0     # record of the armed recv, 0 if none
        self.write_id = 0    # record of the send/sendfile/connect in flight, 0 if none
        #: Received but undelivered chunks (then b"" or -errno at the end).
        self.backlog: list[bytes | int] = []
        # Own receive buffer, used only where provided-buffer rings are not.
        self.buffer: bytearray | None = None
        self.buffer_view: memoryview | None = None
        self.buffer_address = 0


class _Listener:
    __slots__ = ("fd", "on_accept", "op_id", "active", "accepted")

    def __init__(self, fd: int, on_accept: ResultCallback) -> None:
        self.fd = fd
        self.on_accept = on_accept
        self.op_id = 0
        self.active = True
        #: Whether an accept ever succeeded: an EINVAL before that may mean
        #: the kernel does not know multishot accept.
        self.accepted = False


class UringEngine(Engine):
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
        self._ring = ring = self._setup(entries, entries * 8)
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
        self._words = ring.words
        self._ring_map = ring.ring
        self._sqes = ring.sqes
        self._sqe_addresses = ring.sqe_addresses
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

        self._ops: dict[int, tuple] = {}
        self._next_id = 1   # user_data 0 marks completions nobody waits for
        self._conns: dict[int, _Conn] = {}
        self._listeners: dict[int, _Listener] = {}
        #: (conn, callback, value) to run at the start of the next poll;
        #: callback None means "deliver conn's backlog".
        self._soon: list[tuple[_Conn, ResultCallback | None, int]] = []
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
                if exc.errno != errno.EINVAL or not flags:
                    raise
            else:
                ring.setup_flags = flags
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
        tail = self._sq_tail
        to_submit = tail - self._sq_submitted
        if to_submit:
            self._words[self._sq_tail_word] = tail & _U32
        if arg is None:
            result = _syscall(_NR_ENTER, self._ring_fd, to_submit, min_complete, flags, None)
        else:
            result = _syscall(_NR_ENTER, self._ring_fd, to_submit, min_complete, flags, arg,
                              self._getevents_size)
        if to_submit and result != to_submit:
            # Without SUBMIT_ALL the kernel stops at a bad entry; the rest
            # goes with the next enter.
            words = self._words
            tail -= (tail - words[self._sq_head_word]) & _U32
        self._sq_submitted = tail
        self._sq_limit = tail + self._sq_entries
        if result < 0:
            err = abi.get_errno()
            if err not in _BENIGN_ENTER_ERRORS:
                raise OSError(err, os.strerror(err))

    def _cancel(self, user_data: int) -> None:
        self._push(abi.IORING_OP_ASYNC_CANCEL, -1, user_data, 0, 0, 0)

    def _new_id(self) -> int:
        op_id = self._next_id
        self._next_id = op_id + 1
        return op_id

    def _conn(self, fd: int) -> _Conn:
        conn = self._conns.get(fd)
        if conn is None:
            conn = self._conns[fd] = _Conn(fd)
        return conn

    # -- accept -----------------------------------------------------------

    def accept(self, listen_fd: int, on_accept: ResultCallback) -> None:
        self.stop_accepting(listen_fd)   # accepting again replaces the callback
        listener = self._listeners[listen_fd] = _Listener(listen_fd, on_accept)
        self._arm_accept(listener)

    def _arm_accept(self, listener: _Listener) -> None:
        op_id = listener.op_id = self._new_id()
        self._ops[op_id] = (_ACCEPT, listener)
        self._push(abi.IORING_OP_ACCEPT, listener.fd, 0, 0, _ACCEPT_FLAGS, op_id,
                   ioprio=self._accept_ioprio)

    def stop_accepting(self, listen_fd: int) -> None:
        listener = self._listeners.pop(listen_fd, None)
        if listener is not None:
            listener.active = False
            if listener.op_id:
                self._cancel(listener.op_id)

    def _accepted(self, listener: _Listener, res: int, flags: int) -> None:
        final = not flags & _F_MORE
        if final:
            listener.op_id = 0
        if not listener.active:
            if res >= 0:
                os.close(res)   # accepted after stop: nobody will take it
            return
        if res >= 0:
            listener.accepted = True
            if final:
                self._arm_accept(listener)
            listener.on_accept(res)
            return
        if res == -errno.EINVAL and self._accept_ioprio and not listener.accepted:
            self._accept_ioprio = 0   # kernel without multishot accept
            self._arm_accept(listener)
            return
        if -res in _FATAL_ACCEPT_ERRORS:
            listener.active = False
            if self._listeners.get(listener.fd) is listener:
                del self._listeners[listener.fd]
        elif final:
            self._arm_accept(listener)
        listener.on_accept(res)

    # -- reading ----------------------------------------------------------

    def start_reading(self, fd: int, on_data: DataCallback) -> None:
        conn = self._conn(fd)
        conn.on_data = on_data
        conn.paused = False
        if conn.backlog:
            self._soon.append((conn, None, 0))
        elif not conn.ended:
            conn.sink = on_data
        if not conn.recv_id and not conn.ended:
            self._arm_recv(conn)

    def stop_reading(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        conn.paused = True
        conn.sink = None
        if conn.recv_id:
            # Chunks completing before the cancel lands go to the backlog.
            self._cancel(conn.recv_id)

    def _arm_recv(self, conn: _Conn) -> None:
        op_id = conn.recv_id = self._new_id()
        self._ops[op_id] = (_RECV, conn)
        if self._buffers is not None:
            self._push(abi.IORING_OP_RECV, conn.fd, 0, 0, 0, op_id, ioprio=self._recv_ioprio,
                       sqe_flags=abi.IOSQE_BUFFER_SELECT, buf_group=self._buffers.group)
            return
        if conn.buffer is None:
            conn.buffer = bytearray(READ_CHUNK)
            conn.buffer_view = memoryview(conn.buffer)
            conn.buffer_address = abi.address_of(conn.buffer)
        self._push(abi.IORING_OP_RECV, conn.fd, conn.buffer_address, READ_CHUNK, 0, op_id)

    def _rearm_recv_if_reading(self, conn: _Conn) -> None:
        if conn.open and not conn.paused and not conn.ended:
            self._arm_recv(conn)

    def _recv_ended(self, conn: _Conn, res: int) -> None:
        """A recv completed without data: EOF, error, cancel or no buffer."""
        conn.recv_id = 0
        if not conn.open:
            return
        if res == -errno.ECANCELED or res == -errno.ENOBUFS:
            # Our stop_reading, or the buffer ring ran dry (it is refilled
            # before the next enter): resume if reading is wanted.
            self._rearm_recv_if_reading(conn)
            return
        if res == -errno.EINVAL and self._recv_ioprio:
            self._recv_ioprio = 0   # kernel without multishot recv
            self._rearm_recv_if_reading(conn)
            return
        conn.ended = True
        event = res if res else b""
        sink = conn.sink
        if sink is None:
            conn.backlog.append(event)
            return
        conn.sink = None
        sink(event)

    def _deliver_backlog(self, conn: _Conn) -> None:
        backlog = conn.backlog
        while backlog and conn.open and not conn.paused:
            conn.on_data(backlog.pop(0))
        if not backlog and conn.open and not conn.paused and not conn.ended:
            conn.sink = conn.on_data

    # -- writing ----------------------------------------------------------

    def send(self, fd: int, data: Buffer, on_sent: ResultCallback) -> None:
        conn = self._conns.get(fd) or self._conn(fd)
        op_id = self._next_id
        self._next_id = op_id + 1
        conn.write_id = op_id
        tail = self._sq_tail
        if tail == self._sq_limit:
            tail = self._make_room()
        slot = tail & self._sq_mask
        if type(data) is bytes and len(data) <= _SMALL_SEND:
            # The SQE's addr is set from the bytes themselves (SqeAddress);
            # the record keeps them alive until the completion. The overlay
            # also holds them until its slot carries another such send:
            # hence only small ones, bounding what is held to entries x 4 KiB.
            _pack_sqe(self._sqes, slot << 6, abi.IORING_OP_SEND, 0, 0, fd, 0, 0,
                      len(data), _MSG_NOSIGNAL, op_id, 0)
            self._sqe_addresses[slot].addr = data
            self._ops[op_id] = (_RESULT, conn, on_sent, data)
        else:
            pinned, address, length = _pin(data)
            _pack_sqe(self._sqes, slot << 6, abi.IORING_OP_SEND, 0, 0, fd, 0, address,
                      min(length, _MAX_SEND), _MSG_NOSIGNAL, op_id, 0)
            self._ops[op_id] = (_RESULT, conn, on_sent, pinned)
        self._sq_tail = tail + 1

    def sendmsg(self, fd: int, buffers: Sequence[Buffer], on_sent: ResultCallback) -> None:
        if sum(map(len, buffers)) <= _JOIN_LIMIT:
            # Copying a few small pieces into one costs less than pinning
            # each of them for an iovec.
            self.send(fd, b"".join(buffers), on_sent)
            return
        conn = self._conns.get(fd) or self._conn(fd)
        # Past IOV_MAX the kernel refuses the whole call; sending the first
        # IOV_MAX buffers is a partial send, which the contract allows.
        buffers = buffers[:abi.IOV_MAX]
        block = bytearray(abi.MSGHDR.size + abi.IOVEC.size * len(buffers))
        block_pin = _c_char_from_buffer(block)
        base = _addressof(block_pin)
        pins = [block_pin]
        offset = abi.MSGHDR.size
        for buffer in buffers:
            pinned, address, length = _pin(buffer)
            abi.IOVEC.pack_into(block, offset, address, length)
            pins.append(pinned)
            offset += abi.IOVEC.size
        abi.MSGHDR.pack_into(block, 0, base + abi.MSGHDR.size, len(buffers))
        op_id = self._new_id()
        self._ops[op_id] = (_RESULT, conn, on_sent, pins)
        conn.write_id = op_id
        self._push(abi.IORING_OP_SENDMSG, fd, base, 1, _MSG_NOSIGNAL, op_id)

    def sendfile(self, fd: int, file_fd: int, offset: int, count: int,
                 on_sent: ResultCallback) -> None:
        # os.sendfile on the non-blocking socket, waiting for POLLOUT through
        # the ring only when it would block. Chosen over splice (file -> pipe
        # -> socket as linked SQEs) because a partial splice strands bytes in
        # the pipe that must be drained or discarded exactly; sendfile moves
        # the same pages with nothing to reconcile. Page-cache misses block
        # this thread, as they would inside splice's io-wq worker.
        conn = self._conns.get(fd) or self._conn(fd)
        try:
            sent = os.sendfile(fd, file_fd, offset, count)
        except BlockingIOError:
            self._wait_writable(conn, on_sent, (file_fd, offset, count))
        except OSError as exc:
            self._soon.append((conn, on_sent, -exc.errno))
        else:
            self._soon.append((conn, on_sent, sent))

    def _wait_writable(self, conn: _Conn, on_sent: ResultCallback, what: tuple) -> None:
        op_id = conn.write_id = self._new_id()
        self._ops[op_id] = (_SENDFILE, conn, on_sent, what)
        self._push(abi.IORING_OP_POLL_ADD, conn.fd, 0, 0, abi.POLLOUT, op_id)

    def _writable(self, conn: _Conn, on_sent: ResultCallback, what: tuple, res: int) -> None:
        if res < 0:
            on_sent(res)
            return
        file_fd, offset, count = what
        try:
            sent = os.sendfile(conn.fd, file_fd, offset, count)
        except BlockingIOError:
            self._wait_writable(conn, on_sent, what)
            return
        except OSError as exc:
            sent = -exc.errno
        on_sent(sent)

    def connect(self, fd: int, address: tuple, on_connected: ResultCallback) -> None:
        conn = self._conn(fd)
        sockaddr = bytearray(_sockaddr(fd, address))
        pinned = _c_char_from_buffer(sockaddr)
        op_id = conn.write_id = self._new_id()
        self._ops[op_id] = (_RESULT, conn, on_connected, pinned)
        self._push(abi.IORING_OP_CONNECT, fd, _addressof(pinned), 0, 0, op_id,
                   off=len(sockaddr))

    # -- closing ----------------------------------------------------------

    def close(self, fd: int) -> None:
        in_flight = []
        conn = self._conns.pop(fd, None)
        if conn is not None:
            conn.open = False
            conn.sink = None
            conn.backlog.clear()
            in_flight += (op_id for op_id in (conn.recv_id, conn.write_id) if op_id)
        listener = self._listeners.pop(fd, None)
        if listener is not None:
            listener.active = False
            if listener.op_id:
                in_flight.append(listener.op_id)
        if in_flight:
            if self.cancels_by_fd:
                self._push(abi.IORING_OP_ASYNC_CANCEL, fd, 0, 0,
                           abi.IORING_ASYNC_CANCEL_FD | abi.IORING_ASYNC_CANCEL_ALL, 0)
            else:
                for op_id in in_flight:
                    self._cancel(op_id)
            # The cancel must reach the kernel before the descriptor number is
            # freed for reuse; running completion work (GETEVENTS) also lets
            # the cancelled requests drop their hold on the socket, so it is
            # really closed when os.close returns.
            self._enter(0, _GETEVENTS, None)
        os.close(fd)

    # -- the loop ---------------------------------------------------------

    def poll(self, timeout: float | None) -> None:
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
            words = self._words
            if (words[self._cq_tail_word] != self._cq_head
                    or words[self._sq_flags_word] & abi.IORING_SQ_CQ_OVERFLOW):
                self._reap()
        finally:
            self._polling = False
            if self._shutdown_requested:
                self._teardown()

    def _run_soon(self) -> None:
        soon, self._soon = self._soon, []
        for index, (conn, callback, value) in enumerate(soon):
            try:
                if not conn.open:
                    continue
                if callback is None:
                    self._deliver_backlog(conn)
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
        ops_get = self._ops.get
        ops_pop = self._ops.pop
        buffers = self._buffers
        if buffers is not None:
            pool, buffer_size, buffer_base, buffer_mask, buffer_entries = self._buffer_layout
            buffer_tail = buffers.tail
        try:
            for user_data, res, flags in completions:
                op = ops_get(user_data) if flags & _F_MORE else ops_pop(user_data, None)
                if flags & _F_BUFFER:
                    buffer_id = flags >> _BUFFER_ID_SHIFT
                    start = buffer_id * buffer_size
                    data = pool[start:start + res]
                    # The chunk is copied: hand the buffer straight back.
                    _pack_buffer(buffer_entries, (buffer_tail & buffer_mask) << 4,
                                 buffer_base + start, buffer_size, buffer_id)
                    buffer_tail = (buffer_tail + 1) & 0xFFFF
                if op is None:
                    continue   # a cancel's own completion, or a dropped record
                kind = op[0]
                conn = op[1]
                if kind == _RECV:
                    if res <= 0:
                        self._recv_ended(conn, res)
                        continue
                    if not flags & _F_BUFFER:
                        data = conn.buffer_view[:res].tobytes()
                    if not flags & _F_MORE:
                        conn.recv_id = 0
                        self._rearm_recv_if_reading(conn)
                    sink = conn.sink
                    if sink is not None:
                        sink(data)
                    elif conn.open:
                        conn.backlog.append(data)
                elif kind == _RESULT:
                    conn.write_id = 0
                    if conn.open:
                        op[2](res)
                elif kind == _ACCEPT:
                    self._accepted(conn, res, flags)
                else:
                    conn.write_id = 0
                    if conn.open:
                        self._writable(conn, op[2], op[3], res)
        finally:
            if buffers is not None and buffer_tail != buffers.tail:
                # Published once per batch, also when a callback raised.
                buffers.tail = buffer_tail
                buffers.tail_words[buffers.TAIL_WORD] = buffer_tail
        self._leftover = None

    # -- teardown ---------------------------------------------------------

    def shutdown(self) -> None:
        if self._polling:
            # Called from a callback: finish the turn without more callbacks,
            # then release the rings.
            self._shutdown_requested = True
            self._ops.clear()
            self._soon.clear()
            return
        self._teardown()

    def _teardown(self) -> None:
        self._shutdown_requested = False
        ring, self._ring = self._ring, None
        if ring is None:
            return
        self._ops.clear()
        self._soon.clear()
        self._conns.clear()
        self._listeners.clear()
        self._leftover = None
        self._words = None
        # Closing the ring cancels whatever is in flight; only then may the
        # buffers the kernel writes into be unmapped.
        ring.close()
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None


def _sockaddr(fd: int, address: tuple) -> bytes:
    """Encode ``address`` as a ``struct sockaddr`` for the socket ``fd``."""
    sock = socket.socket(fileno=fd)
    try:
        family = sock.family
    finally:
        sock.detach()
    resolved = socket.getaddrinfo(address[0], address[1], family, socket.SOCK_STREAM)[0][4]
    if family == socket.AF_INET:
        return (struct.pack("=H", family) + struct.pack("!H", resolved[1])
                + socket.inet_pton(socket.AF_INET, resolved[0]) + bytes(8))
    if family == socket.AF_INET6:
        # getaddrinfo turns a "%zone" suffix into scope_id; flowinfo and
        # scope_id given in the address itself win, as for socket.connect.
        host, port, flowinfo, scope_id = resolved
        if len(address) > 2:
            flowinfo = address[2]
        if len(address) > 3:
            scope_id = address[3]
        return (struct.pack("=H", family) + struct.pack("!HI", port, flowinfo)
                + socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                + struct.pack("=I", scope_id))
    raise OSError(errno.EAFNOSUPPORT, "connect supports IPv4 and IPv6 sockets")
