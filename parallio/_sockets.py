"""Socket calls on a bare descriptor, for the layers that own descriptors
rather than socket objects (engines, transports, workers)."""

from __future__ import annotations

import contextlib
import ctypes
import socket
from typing import Iterator

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def borrowed(fd: int) -> Iterator[socket.socket]:
    """A socket object for ``fd`` that leaves the descriptor open when the
    block ends (the caller keeps owning it)."""
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()


def shutdown_write(fd: int) -> None:
    """``shutdown(fd, SHUT_WR)``, errors ignored (a peer that is gone shows
    at the next read). Through libc: a socket object for the descriptor
    would cost three getsockopt calls to learn what it is first."""
    _libc.shutdown(fd, socket.SHUT_WR)
