"""Workers as child processes: parallel on any CPython 3.11+.

Each child runs a fresh interpreter (spawned, never forked: forking a process
with threads is unsafe) that inherits only the descriptors it is given: its
control socket, reply pipe and listening sockets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Iterable

from .._spec import WorkerSpec
from .base import Host, WorkerHandle, bootstrap_code, handed_fds

#: A worker process that crashes in C (a segfault in an extension) prints
#: the Python stack of every thread to stderr before it dies, so the log
#: says where; the main process then logs the signal and restarts it.
CRASH_REPORTS = "import faulthandler; faulthandler.enable(all_threads=True)\n"


class ProcessHandle(WorkerHandle):
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.is_alive():
            self.process.kill()
            self.process.wait()

    def kill_note(self) -> str:
        return f"killing it (pid {self.process.pid})"

    def describe_exit(self) -> str:
        code = self.process.poll()
        return "is still running" if code is None else describe_returncode(code)


def describe_returncode(code: int) -> str:
    """How a child process ended, from its return code."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


class ProcessesHost(Host):
    name = "processes"
    in_process = False
    can_kill_workers = True
    rss_per_worker = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        return ProcessHandle(spawn(bootstrap_code(control_fd, spec.seq_id, CRASH_REPORTS),
                                   handed_fds(control_fd, spec),
                                   spec.extras.get("pass_fds", ())))


def spawn(code: str, fds: list[int], shared_fds: Iterable[int] = ()) -> subprocess.Popen:
    """A fresh interpreter running ``code``, given ``fds`` (closed here once
    the child has its copies, or failed to start) and ``shared_fds`` (that
    stay open here too: shared memory the services list)."""
    try:
        return subprocess.Popen([sys.executable, "-c", code],
                                pass_fds=(*fds, *shared_fds), stdin=subprocess.DEVNULL)
    finally:
        for fd in fds:
            os.close(fd)
