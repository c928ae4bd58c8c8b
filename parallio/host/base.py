"""What a host is: a way to run N workers, each on its own thread of control."""

from __future__ import annotations

import abc
import os
import sys

from .._spec import WorkerSpec


class WorkerHandle(abc.ABC):
    """The main thread's grip on one running worker."""

    @abc.abstractmethod
    def is_alive(self) -> bool: ...

    @abc.abstractmethod
    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None:
        """Force the worker to end, where the host can (see
        :attr:`Host.can_kill_workers`)."""

    def kill_note(self) -> str:
        """What :meth:`kill` is about to do, for the log."""
        return "killing it"

    def describe_exit(self) -> str:
        return "ended"


class Host(abc.ABC):
    name: str
    #: Workers share the main thread's process: a fatal fault in one ends all.
    in_process = True
    #: :meth:`WorkerHandle.kill` can end one hung worker.
    can_kill_workers = False
    #: Each worker has its own process, so its resident memory is its own.
    rss_per_worker = False

    @property
    def worker_host(self) -> str:
        """The host name workers are told: the one whose rules they follow."""
        return self.name

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> str | None:
        """Why this host cannot run on this Python, or None when it can."""

    @abc.abstractmethod
    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        """Start a worker running :func:`parallio.worker.worker_main` on
        ``control_fd``. The host now owns ``control_fd`` and
        ``spec.reply_fd``, and closes them when the worker ends; the worker
        owns ``spec.listen_fds`` (the host closes them if it cannot start
        the worker)."""

    def close(self) -> None:
        """Release what the host holds once every worker has ended."""


def handed_fds(control_fd: int, spec: WorkerSpec) -> list[int]:
    """The descriptors a new worker is given."""
    fds = [control_fd, *(fd for fd in spec.listen_fds if fd >= 0)]
    if spec.reply_fd is not None:
        fds.append(spec.reply_fd)
    return fds


def close_host_fds(control_fd: int, spec: WorkerSpec) -> None:
    """Close what the host owns once its worker has ended."""
    os.close(control_fd)
    if spec.reply_fd is not None:
        os.close(spec.reply_fd)


def close_handed_fds(control_fd: int, spec: WorkerSpec) -> None:
    """Close everything a worker that could not be started was given."""
    for fd in handed_fds(control_fd, spec):
        os.close(fd)


def bootstrap_code(control_fd: int, seq_id: int, prelude: str = "",
                   spec_pickle: bytes | None = None) -> str:
    """Python source that runs worker ``seq_id`` in a fresh interpreter: it
    first makes the parent's import path its own so parallio and the user's
    modules import the same way. The worker reads its spec from the control
    socket, unless it is given here, pickled.

    The worker runs in a function named after it, so that a fatal-error
    traceback (faulthandler's) says which worker it was."""
    spec = "None" if spec_pickle is None else f"__import__('pickle').loads({spec_pickle!r})"
    return (f"import sys; sys.path[:] = {sys.path!r}\n{prelude}"
            f"def parallio_worker_{seq_id}():\n"
            "    from parallio.worker import worker_main\n"
            f"    return worker_main({control_fd}, {spec})\n"
            f"if not parallio_worker_{seq_id}(): raise SystemExit(1)\n")
