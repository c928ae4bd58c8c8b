"""What a host is: a way to run N workers, each on its own thread of control."""

from __future__ import annotations

import abc
import importlib
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


def import_problem_code(modules: list[str], main_path: str | None, *,
                        report: bool = False) -> str:
    """Python source that imports ``modules`` (and the main script at
    ``main_path``) as a worker would, raising :func:`probe_imports`'s
    ImportError if one fails; with ``report``, writing it to standard error
    for people (see :mod:`parallio._errors`) and exiting 1 instead."""
    probe = f"probe_imports({modules!r}, {main_path!r})\n"
    if report:
        probe = ("try:\n    " + probe + "except ImportError as exc:\n"
                 "    from parallio._errors import describe\n"
                 "    sys.stderr.write(describe(exc))\n"
                 "    raise SystemExit(1)\n")
    return (f"import sys; sys.path[:] = {sys.path!r}\n"
            "from parallio.host.base import probe_imports\n" + probe)


def probe_imports(modules: list[str], main_path: str | None) -> None:
    """Import ``modules``, then the main script, here. An ImportError
    naming the module that failed (and, when another module's import inside
    it raised, that one too) is raised from the original error."""
    from ..worker import load_main_module
    from .._spec import MainModule

    for name in [*modules, *([None] if main_path else [])]:
        try:
            if name is None:
                load_main_module(MainModule(None, main_path))
            else:
                importlib.import_module(name)
        except BaseException as exc:
            what = name or main_path
            inner = _innermost_module(exc)
            where = f" (in {inner})" if inner and inner != what else ""
            raise ImportError(f"{what}{where}: {type(exc).__name__}: {exc}") from exc


def _innermost_module(exc: BaseException) -> str | None:
    """The module whose import raised ``exc``: the one an ImportError
    names, else the innermost module body running in its traceback."""
    if isinstance(exc, ImportError) and exc.name:
        return exc.name
    found = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "<module>":
            found = tb.tb_frame.f_globals.get("__name__")
        tb = tb.tb_next
    return found
