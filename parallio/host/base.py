"""What a host is: a way to run N workers, each on its own thread of control."""

from __future__ import annotations

import abc
import sys

from .._spec import WorkerSpec


class WorkerHandle(abc.ABC):
    """The main thread's grip on one running worker."""

    @abc.abstractmethod
    def is_alive(self) -> bool: ...

    @abc.abstractmethod
    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None:
        """Force the worker to end, where the host can (processes only)."""

    def describe_exit(self) -> str:
        return "ended"


class Host(abc.ABC):
    name: str

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> str | None:
        """Why this host cannot run on this Python, or None when it can."""

    @abc.abstractmethod
    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        """Start a worker running :func:`parallio.worker.worker_main` on
        ``control_fd``, which the host now owns and closes when the worker
        ends."""


def bootstrap_code(control_fd: int) -> str:
    """Python source that runs a worker in a fresh interpreter: it first
    makes the parent's import path its own so parallio and the user's modules
    import the same way."""
    return (f"import sys; sys.path[:] = {sys.path!r}\n"
            "from parallio.worker import worker_main\n"
            f"if not worker_main({control_fd}): raise SystemExit(1)\n")
