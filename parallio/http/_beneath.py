"""Opening a request's path below a root directory, resolved by the kernel.

Resolving with :func:`os.path.realpath` costs a ``lstat`` per component and
a page of Python per request. Linux's ``openat2(2)`` (5.6+) with
``RESOLVE_BENEATH`` resolves the whole path in one system call, relative to
the root's descriptor, and fails with ``EXDEV`` if any step (a ``..``, a
symlink) would leave the root. The file is first opened with ``O_PATH``,
which opens nothing for I/O (a FIFO cannot block, a device is not touched),
and reopened for reading, through ``/proc/self/fd``, only once ``fstat``
says it is a regular file: the file checked is the file sent.

The kernel cannot answer for an absolute symlink (``RESOLVE_BENEATH``
refuses those even when they point inside the root), nor without
``openat2`` or ``/proc``: :func:`open_beneath` then returns None and the
caller resolves the slow way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import threading
from typing import Any, Optional

__all__ = ["open_beneath", "reopen_for_reading"]

# openat2 has one number on every architecture (the unified table).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_O_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC if hasattr(os, "O_PATH") else 0


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_HOW = _OpenHow(_O_PATH_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
_HOW_SIZE = ctypes.sizeof(_HOW)
_syscall: Optional[Any]
try:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
except (OSError, AttributeError):
    _syscall = None
#: False once the kernel (or a seccomp filter) refused openat2, or /proc is absent.
_usable = (_syscall is not None and _O_PATH_FLAGS != 0 and platform.system() == "Linux"
           and platform.machine() in ("x86_64", "aarch64", "riscv64", "ppc64le", "s390x"))
# The descriptors of roots, per interpreter (a module global: processes and
# interpreters each have their own). Never closed: a root lives as long as
# the server.
_roots: dict[bytes, int] = {}
_roots_lock = threading.Lock()


def _root_fd(root: bytes) -> int:
    fd = _roots.get(root)
    if fd is None:
        with _roots_lock:
            fd = _roots.get(root)
            if fd is None:
                fd = _roots[root] = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd


def open_beneath(root: bytes, relative: bytes) -> Optional[tuple[int, os.stat_result]]:
    """``relative`` (no leading slash, no ``..`` segment) under the directory
    ``root``, resolved by the kernel: an ``O_PATH`` descriptor and its status
    (the caller closes the descriptor), or None when the kernel cannot tell
    (see the module docstring). Raises :class:`OSError` as ``open`` would
    (``FileNotFoundError``, ``PermissionError``, ``NotADirectoryError``,
    ``ELOOP``); ``EXDEV`` means the path leaves the root or takes an absolute
    symlink, which is not an answer either: None."""
    global _usable
    if not _usable or _syscall is None:
        return None
    fd = _syscall(_SYS_OPENAT2, _root_fd(root), relative or b".", ctypes.byref(_HOW), _HOW_SIZE)
    if fd < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL):
            _usable = False  # no openat2 here (or a sandbox forbids it)
            return None
        if code == errno.EXDEV:
            return None
        raise OSError(code, os.strerror(code))
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def reopen_for_reading(fd: int) -> Optional[int]:
    """A descriptor open for reading on the file of the ``O_PATH``
    descriptor ``fd`` (through ``/proc/self/fd``), or None without /proc."""
    global _usable
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        _usable = False
        return None
