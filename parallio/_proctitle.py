"""Names of processes and threads, as ``ps`` and ``top`` show them.

Linux keeps two. Every thread has a *comm* of at most 15 bytes (what
``ps -e``, ``top`` and ``ps -L`` show), set by prctl(PR_SET_NAME) for the
calling thread; a process's comm is its main thread's. A process also has
its *command line* (what ``ps aux`` and ``ps -ef`` show), which the kernel
reads from the memory its argv strings were given at exec: rewriting that
memory renames the process there. Python keeps its own copy of the
arguments, so nothing reads the original memory again. No dependency:
ctypes and /proc.
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["set_thread_name", "set_command_line", "set_process_title"]

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NAME = 15
#: The kernel's limit on a comm, without its terminating NUL.
COMM_MAX = 15


def set_thread_name(name: str, comm: str | None = None) -> None:
    """Name the calling thread: ``name`` for :mod:`threading`, ``comm``
    (``name`` if not given; cut to 15 bytes) for the kernel."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p((comm or name).encode()[:COMM_MAX]), 0, 0, 0)
    threading.current_thread().name = name


def _argv_area() -> tuple[int, int] | None:
    """Where this process's original argv strings lie: (address, size),
    from /proc/self/stat's arg_start and arg_end (proc(5), fields 48-49)."""
    try:
        with open("/proc/self/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    # The comm (field 2) is in parentheses and may hold anything: count the
    # fields after its closing one.
    fields = stat[stat.rindex(b")") + 2:].split()
    if len(fields) < 47:
        return None
    start, end = int(fields[45]), int(fields[46])
    return (start, end - start) if 0 < start < end else None


def set_command_line(title: str) -> bool:
    """Show ``title`` as this process's command line, in the space its
    original one had (a longer title is cut). False, and nothing changed,
    where that space cannot be found and checked."""
    area = _argv_area()
    if area is None:
        return False
    address, size = area
    try:
        with open("/proc/self/cmdline", "rb") as file:
            shown = file.read()
    except OSError:
        return False
    # Only over memory that holds exactly the command line the kernel shows.
    if ctypes.string_at(address, size) != shown[:size] or len(shown) != size:
        return False
    data = title.encode()[:size - 1]
    ctypes.memmove(address, data + b"\0" * (size - len(data)), size)
    return True


def set_process_title(title: str, comm: str) -> None:
    """Name this process: ``title`` as its command line (and its main
    thread's name in :mod:`threading`), ``comm`` (at most 15 bytes) as its
    name for the kernel. Call it on the main thread."""
    set_command_line(title)
    set_thread_name(title, comm)
