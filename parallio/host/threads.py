"""Workers as threads of one interpreter.

Truly parallel only where the GIL is disabled (free-threaded CPython
3.13t/3.14t); on a GIL build the workers take turns, which is correct but no
faster than one (so ``auto`` never picks this host there).
"""

from __future__ import annotations

import sys
import sysconfig
import threading
import types

from .._spec import WorkerSpec
from .base import Host, WorkerHandle, close_handed_fds, close_host_fds


def gil_disabled() -> bool:
    """True when this interpreter really runs threads in parallel."""
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_enabled is not None and not is_enabled()


class ThreadHandle(WorkerHandle):
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


class ThreadsHost(Host):
    name = "threads"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        from ..worker import worker_main

        def run() -> None:
            try:
                worker_main(control_fd, spec)
            finally:
                close_host_fds(control_fd, spec)

        # Named after the worker, so that a fatal-error traceback
        # (faulthandler's) says which worker's thread it was.
        named = types.FunctionType(run.__code__.replace(co_name=f"parallio_worker_{spec.seq_id}"),
                                   run.__globals__, closure=run.__closure__)
        thread = threading.Thread(target=named, name=f"parallio-worker-{spec.seq_id}",
                                  daemon=True)
        try:
            thread.start()
        except BaseException:
            close_handed_fds(control_fd, spec)
            raise
        return ThreadHandle(thread)
