"""Giving memory back to the system after bursts, where the C library allows.

A server's large buffers (request heads and bodies of up to megabytes) are
allocated with ``malloc``, among its long-lived small objects. glibc keeps
freed memory for reuse, so after a burst of big requests the process keeps
its peak size although nothing holds the buffers any more. Two remedies:

* :func:`tune_allocator`: allocations from 256 KiB up get their own
  mappings (``M_MMAP_THRESHOLD``, which also stops glibc from raising that
  threshold whenever such a block is freed), so freeing them unmaps them;
* :func:`release_free_memory`: ``malloc_trim(0)`` returns the free pages in
  the middle of the heap too. It costs time in proportion to the heap, so
  workers call it once a burst is over, not per connection.

Both do nothing on other C libraries (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Optional

__all__ = ["tune_allocator", "release_free_memory"]

_M_MMAP_THRESHOLD = -3
#: Blocks this large or larger are mapped on their own.
MMAP_THRESHOLD = 256 * 1024

_mallopt: Optional[Any]
_malloc_trim: Optional[Any]
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _mallopt = _libc.mallopt
    _malloc_trim = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _mallopt = _malloc_trim = None


def tune_allocator() -> None:
    """Make large allocations separate mappings, returned when freed."""
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; True if any went."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
