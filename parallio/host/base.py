"""What a host is: a way to run N workers, each on its own thread of control."""

from __future__ import annotations

import abc
import importlib
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


def bootstrap_code(control_fd: int, process_of: int | None = None) -> str:
    """Python source that runs a worker in a fresh interpreter: it first
    makes the parent's import path its own so parallio and the user's modules
    import the same way. ``process_of``: the interpreter is worker N's own
    process, named after it (``ps`` shows ``parallio: worker N``)."""
    naming = ("from parallio._proctitle import set_process_title\n"
              f"set_process_title('parallio: worker {process_of}', 'parallio: w{process_of}')\n"
              if process_of is not None else "")
    # A process's exit status tells its failure; an interpreter's failure is
    # told by the worker itself (the "failed" message, or its crash log).
    run = (f"if not worker_main({control_fd}): raise SystemExit(1)\n" if process_of is not None
           else f"worker_main({control_fd})\n")
    return (f"import sys; sys.path[:] = {sys.path!r}\n" + naming +
            "from parallio.worker import worker_main\n" + run)


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
