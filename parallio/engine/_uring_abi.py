"""The io_uring kernel ABI, reached from pure Python through ctypes and mmap.

Only what :mod:`parallio.engine.uring` uses is declared here. Layouts follow
``<linux/io_uring.h>``; every structure is written with native byte order and
explicit padding (``=`` formats), so no compiler is involved.

Nothing here keeps mutable module-level state: each (sub)interpreter that
imports this module gets its own ``CDLL`` handle, and every buffer handed to
the kernel belongs to a :class:`Ring` instance.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
from typing import Any

# -- system calls -----------------------------------------------------------

# Since Linux 5.1 new system calls get the same number on every architecture
# that uses the unified table: x86_64's own table and asm-generic's (aarch64,
# riscv64, loongarch64) both have 425-427, as do powerpc and s390; alpha,
# ia64 and MIPS add offsets. Only 64-bit machines are listed: the msghdr and
# iovec layouts below are LP64.
_UNIFIED_TABLE_MACHINES = frozenset({
    "x86_64", "amd64", "aarch64", "arm64", "riscv64", "loongarch64",
    "ppc64", "ppc64le", "s390x",
})
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427

#: Whether this machine uses the syscall numbers above.
SYSCALL_NUMBERS_KNOWN = platform.machine().lower() in _UNIFIED_TABLE_MACHINES

_libc = ctypes.CDLL(None, use_errno=True)
#: ``syscall(2)``. Deliberately without ``argtypes``: converting arguments
#: through ``argtypes`` doubles the cost of each call. Without them a Python
#: int travels as a C int, so callers pass pointers and 64-bit values as
#: prebuilt ctypes objects. The result stays a C int (the default): every
#: io_uring call returns an int, and -1 with errno on failure.
syscall = _libc.syscall
get_errno = ctypes.get_errno

# -- io_uring_setup ---------------------------------------------------------

IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_R_DISABLED = 1 << 6
IORING_SETUP_SUBMIT_ALL = 1 << 7
IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13

IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_FEAT_NODROP = 1 << 1
IORING_FEAT_EXT_ARG = 1 << 8
#: Features the engine cannot do without: one mmap for both rings, no
#: completion ever dropped on CQ overflow, and a timeout passed to
#: io_uring_enter itself (Linux 5.11).
REQUIRED_FEATURES = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG

IORING_OFF_SQ_RING = 0
IORING_OFF_SQES = 0x10000000


class SqRingOffsets(ctypes.Structure):
    _fields_ = [
        ("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class CqRingOffsets(ctypes.Structure):
    _fields_ = [
        ("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32), ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class IoUringParams(ctypes.Structure):
    _fields_ = [
        ("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
        ("sq_off", SqRingOffsets), ("cq_off", CqRingOffsets),
    ]


assert ctypes.sizeof(IoUringParams) == 120

# -- io_uring_enter ---------------------------------------------------------

IORING_ENTER_GETEVENTS = 1 << 0
IORING_ENTER_EXT_ARG = 1 << 3

IORING_SQ_CQ_OVERFLOW = 1 << 1


class KernelTimespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class GetEventsArg(ctypes.Structure):
    """``struct io_uring_getevents_arg``: the EXT_ARG argument of enter."""
    _fields_ = [
        ("sigmask", ctypes.c_uint64), ("sigmask_sz", ctypes.c_uint32),
        ("pad", ctypes.c_uint32), ("ts", ctypes.c_uint64),
    ]


# -- io_uring_register ------------------------------------------------------

IORING_REGISTER_ENABLE_RINGS = 12
IORING_REGISTER_PBUF_RING = 22


class BufReg(ctypes.Structure):
    """``struct io_uring_buf_reg``: where a provided-buffer ring lives."""
    _fields_ = [
        ("ring_addr", ctypes.c_uint64), ("ring_entries", ctypes.c_uint32),
        ("bgid", ctypes.c_uint16), ("flags", ctypes.c_uint16),
        ("resv", ctypes.c_uint64 * 3),
    ]


# -- submission and completion entries -------------------------------------

IORING_OP_POLL_ADD = 6
IORING_OP_SENDMSG = 9
IORING_OP_ACCEPT = 13
IORING_OP_ASYNC_CANCEL = 14
IORING_OP_CONNECT = 16
IORING_OP_CLOSE = 19
IORING_OP_SEND = 26
IORING_OP_RECV = 27

IOSQE_BUFFER_SELECT = 1 << 5

IORING_ASYNC_CANCEL_ALL = 1 << 0
IORING_ASYNC_CANCEL_FD = 1 << 1

IORING_RECV_MULTISHOT = 1 << 1
IORING_ACCEPT_MULTISHOT = 1 << 0

IORING_CQE_F_BUFFER = 1 << 0
IORING_CQE_F_MORE = 1 << 1
IORING_CQE_BUFFER_SHIFT = 16

SQE_SIZE = 64
CQE_SIZE = 16
#: One submission queue entry, all 64 bytes: opcode, flags, ioprio, fd,
#: off/addr2, addr, len, op-specific flags (msg_flags, accept_flags,
#: poll32_events, cancel_flags...), user_data, buf_group; the zero padding
#: clears whatever the slot's previous occupant left in the fields after.
SQE = struct.Struct("=BBHiQQIIQH22x")
#: One completion queue entry: user_data, res, flags.
CQE = struct.Struct("=QiI")
#: One ``struct io_uring_buf`` without its last two bytes: in entry 0 those
#: bytes are the ring's tail, which writing an entry must not clobber.
BUF_ENTRY = struct.Struct("=QIH")
BUF_ENTRY_SIZE = 16

assert SQE.size == SQE_SIZE and CQE.size == CQE_SIZE


#: ``struct msghdr`` with only msg_iov and msg_iovlen set (LP64 layout).
MSGHDR = struct.Struct("=16xQQ24x")
#: ``struct iovec``.
IOVEC = struct.Struct("=QQ")
IOV_MAX = 1024

POLLIN = 0x001
POLLOUT = 0x004


def _check(result: int) -> int:
    if result < 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))
    return result


def address_of(buffer: Any) -> int:
    """The address of a writable buffer (bytearray, mmap, ctypes object)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


# The C API, through a private handle (ctypes.pythonapi is shared: setting
# restype on it would change it for everyone). PyDLL keeps the GIL during
# calls and raises the Python error a failing call sets.
_python_api = ctypes.PyDLL(None)
_get_buffer = _python_api.PyObject_GetBuffer
_release_buffer = _python_api.PyBuffer_Release
_release_buffer.restype = None
# Py_buffer is in the stable ABI; only its first field, the address, is read,
# from storage larger than the struct.
_PyBuffer = ctypes.c_char * 128
_PyBUF_SIMPLE = 0


def readonly_address(view: memoryview) -> int:
    """The address of a contiguous read-only buffer, through the buffer
    protocol (``PyObject_GetBuffer``): ctypes alone only reaches writable
    ones. The address stays valid while ``view`` lives: the view holds its
    own export of the underlying object."""
    py_buffer = _PyBuffer()
    _get_buffer(ctypes.py_object(view), py_buffer, _PyBUF_SIMPLE)
    try:
        return ctypes.c_void_p.from_buffer(py_buffer).value or 0
    finally:
        _release_buffer(py_buffer)


def io_uring_register(ring_fd: int, opcode: int, arg: Any, count: int) -> int:
    """Call io_uring_register(2); ``arg`` is a ctypes object or None."""
    return _check(syscall(NR_IO_URING_REGISTER, ring_fd, opcode,
                          None if arg is None else ctypes.byref(arg), count))


class Ring:
    """An io_uring instance: its descriptor and its mapped SQ/CQ memory.

    Attributes are what the engine's hot loop needs: ``ring`` (the mapping
    holding both rings), ``words`` (that mapping as unsigned 32-bit words),
    ``sqes`` (the submission entries) and the word/byte offsets in them.
    """

    def __init__(self, sq_entries: int, cq_entries: int, flags: int) -> None:
        if not SYSCALL_NUMBERS_KNOWN:
            raise OSError(errno.ENOSYS, f"io_uring syscall numbers unknown on {platform.machine()}")
        params = IoUringParams(
            flags=flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
            cq_entries=cq_entries)
        #: The IORING_SETUP_* flags asked for (and, once made, accepted).
        self.setup_flags = flags
        self.fd = _check(syscall(NR_IO_URING_SETUP, sq_entries, ctypes.byref(params)))
        try:
            self._map(params)
        except BaseException:
            os.close(self.fd)
            raise

    def _map(self, params: IoUringParams) -> None:
        self.features: int = params.features
        if self.features & REQUIRED_FEATURES != REQUIRED_FEATURES:
            raise OSError(errno.ENOSYS,
                          "io_uring lacks SINGLE_MMAP, NODROP or EXT_ARG (Linux < 5.11)")
        sq, cq = params.sq_off, params.cq_off
        self.sq_entries: int = params.sq_entries
        self.cq_entries: int = params.cq_entries
        size = max(sq.array + 4 * params.sq_entries, cq.cqes + CQE_SIZE * params.cq_entries)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        populate = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self.ring = mmap.mmap(self.fd, size, populate, prot, offset=IORING_OFF_SQ_RING)
        self.sqes = mmap.mmap(self.fd, SQE_SIZE * params.sq_entries, populate, prot,
                              offset=IORING_OFF_SQES)
        self.words = memoryview(self.ring).cast("I")
        # Word indexes into ``words``; all these offsets are 4-byte aligned.
        self.sq_head = sq.head // 4
        self.sq_tail = sq.tail // 4
        self.sq_flags = sq.flags // 4
        self.cq_head = cq.head // 4
        self.cq_tail = cq.tail // 4
        self.sq_mask: int = self.words[sq.ring_mask // 4]
        self.cq_mask: int = self.words[cq.ring_mask // 4]
        self.cqes: int = cq.cqes
        # SQ slot i always holds SQE i: the indirection array is filled once
        # and the engine only ever moves the tail.
        array = sq.array // 4
        self.words[array:array + params.sq_entries] = memoryview(
            struct.pack(f"={params.sq_entries}I", *range(params.sq_entries))).cast("I")

    def close(self) -> None:
        self.words.release()
        self.ring.close()
        self.sqes.close()
        os.close(self.fd)


class BufferRing:
    """A provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19):
    ``count`` buffers of ``size`` bytes the kernel picks from for reads.

    ``pool`` holds the buffers (slicing the mmap gives ``bytes`` in one
    copy), ``entries`` the ring the kernel takes buffer ids from. The engine
    writes entries back itself, inline in its completion loop.
    """

    #: The ring's 16-bit tail overlays the last field of entry 0 (bytes 14-15).
    TAIL_WORD = 7

    def __init__(self, ring_fd: int, group: int, count: int, size: int) -> None:
        if count & (count - 1) or not 0 < count <= 32768:
            raise ValueError("buffer count must be a power of two <= 32768")
        self.group = group
        self.count = count
        self.size = size
        self.mask = count - 1
        self.entries = mmap.mmap(-1, max(count * BUF_ENTRY_SIZE, mmap.PAGESIZE))
        self.pool = mmap.mmap(-1, count * size)
        # Exporting the mappings to ctypes pins them: they cannot be closed
        # or resized while the kernel may still write into them.
        self._pins: tuple[ctypes.c_char, ...] = (ctypes.c_char.from_buffer(self.entries),
                      ctypes.c_char.from_buffer(self.pool))
        self.base = ctypes.addressof(self._pins[1])
        #: The ring as 16-bit words: the tail is word ``TAIL_WORD``.
        self.tail_words = memoryview(self.entries).cast("H")
        reg = BufReg(ring_addr=ctypes.addressof(self._pins[0]),
                     ring_entries=count, bgid=group)
        try:
            io_uring_register(ring_fd, IORING_REGISTER_PBUF_RING, reg, 1)
        except BaseException:
            self.close()
            raise
        for buffer_id in range(count):
            BUF_ENTRY.pack_into(self.entries, buffer_id * BUF_ENTRY_SIZE,
                                self.base + buffer_id * size, size, buffer_id)
        #: Entries handed to the kernel so far, modulo 2**16 like the kernel's.
        self.tail = count & 0xFFFF
        self.tail_words[self.TAIL_WORD] = self.tail

    def close(self) -> None:
        self.tail_words.release()
        self._pins = ()
        self.entries.close()
        self.pool.close()


def probe() -> bool:
    """Whether io_uring_setup works here with the features the engine needs.

    Containers often forbid io_uring through seccomp (EPERM or ENOSYS), and
    kernels before 5.11 lack what the engine requires.
    """
    try:
        Ring(4, 8, 0).close()
    except OSError:
        return False
    return True
