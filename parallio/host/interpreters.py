"""Workers as isolated subinterpreters, each with its own GIL (3.13+).

Each worker gets a fresh interpreter created with the ``isolated`` config and
a thread to run it on, so N workers run Python on N cores inside one process.
Nothing is shared between them but file descriptors: each imports parallio
and the user's modules itself, and talks to the main thread over its control
socket. Extension modules without multi-interpreter support refuse to import
there; ``auto`` probes for that before choosing this host.
"""

from __future__ import annotations

import logging
import sys
import threading

from .._spec import WorkerSpec
from .base import Host, WorkerHandle, bootstrap_code, close_handed_fds, close_host_fds

log = logging.getLogger("parallio")

try:  # 3.13: the private module; 3.14 exposes the same through concurrent.interpreters
    import _interpreters
except ImportError:  # pragma: no cover - depends on the Python running
    _interpreters = None


# CPython 3.13's C datetime module corrupts the heap when interpreters that
# imported it are torn down (python/cpython#136423; seen here as glibc
# aborting with "double free" in about 1 shutdown in 6). Workers on 3.13 use
# the pure-Python implementation instead, which CPython ships and tests as an
# exact equivalent; extensions needing the datetime C API then fail the
# import probe, and `auto` picks processes for them.
_PRELUDE = ("import sys; sys.modules['_datetime'] = None\n"
            if sys.version_info[:2] == (3, 13) else "")


def run_in_new_interpreter(code: str) -> str | None:
    """Run ``code`` in a fresh isolated interpreter; returns a description of
    the exception it raised, or None."""
    assert _interpreters is not None
    interp = _interpreters.create("isolated")
    try:
        failure = _interpreters.exec(interp, _PRELUDE + code)
    finally:
        _interpreters.destroy(interp)
    if failure is None:
        return None
    return getattr(failure, "errdisplay", None) or f"{failure.type.__name__}: {failure.msg}"


def start_interpreter(control_fd: int, spec: WorkerSpec, code: str) -> "InterpreterHandle":
    """Run ``code`` (a worker's bootstrap) in a fresh isolated interpreter
    on a thread of its own; the control socket and reply pipe are closed
    when it ends."""
    handle: InterpreterHandle

    def run() -> None:
        try:
            handle.error = run_in_new_interpreter(code)
            if handle.error:
                log.error("worker %d: its interpreter raised %s", spec.seq_id, handle.error)
        finally:
            close_host_fds(control_fd, spec)

    thread = threading.Thread(target=run, name=f"parallio-interp-{spec.seq_id}", daemon=True)
    handle = InterpreterHandle(thread)
    try:
        thread.start()
    except BaseException:
        close_handed_fds(control_fd, spec)
        raise
    return handle


class InterpreterHandle(WorkerHandle):
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.error: str | None = None

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def describe_exit(self) -> str:
        return f"ended with {self.error}" if self.error else "ended"


class InterpretersHost(Host):
    name = "interpreters"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if sys.version_info < (3, 13) or _interpreters is None:
            return ("isolated subinterpreters need CPython 3.13+ "
                    f"(this is {sys.implementation.name} {sys.version.split()[0]})")
        return None

    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        return start_interpreter(control_fd, spec, bootstrap_code(control_fd, spec.seq_id))

    @staticmethod
    def import_problem(modules: list[str], main_path: str | None) -> str | None:
        """Why these modules cannot be imported in an isolated interpreter,
        or None when they all can."""
        code = f"import sys; sys.path[:] = {sys.path!r}\nimport parallio.worker\n"
        for module in modules:
            code += f"import {module}\n"
        if main_path:
            code += ("from parallio._spec import MainModule\n"
                     f"parallio.worker.load_main_module(MainModule(None, {main_path!r}))\n")
        return run_in_new_interpreter(code)
