"""I/O engines: io_uring first, epoll emulation behind the same interface."""

from __future__ import annotations

from typing import Any

from .base import Engine

ENGINES = ("uring", "epoll")


def uring_unavailable_reason() -> str | None:
    """Why io_uring cannot be used here, or None when it can."""
    try:
        from . import _uring_abi
    except Exception as exc:  # ctypes missing, an unsupported platform...
        return f"the io_uring module does not load: {exc}"
    if not _uring_abi.probe():
        return "io_uring_setup is refused here (seccomp, or an old kernel)"
    return None


def choose_engine(requested: str = "auto") -> tuple[str, str]:
    """Resolve ``auto``; returns (engine name, why it was chosen)."""
    if requested not in ("auto", *ENGINES):
        raise ValueError(f"unknown io engine {requested!r}; choose auto, uring or epoll")
    if requested == "epoll":
        return "epoll", "asked for"
    reason = uring_unavailable_reason()
    if requested == "uring":
        if reason:
            raise RuntimeError(f"io_uring is not available: {reason}")
        return "uring", "asked for"
    if reason:
        return "epoll", f"io_uring unavailable ({reason})"
    return "uring", "io_uring is available"


def make_engine(name: str) -> Engine[Any]:
    if name == "uring":
        from .uring import UringEngine
        return UringEngine()
    if name == "epoll":
        from .epoll import EpollEngine
        return EpollEngine()
    raise ValueError(f"unknown io engine {name!r}")
