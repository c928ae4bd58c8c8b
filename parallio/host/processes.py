"""Workers as child processes: parallel on any CPython 3.11+.

Each child runs a fresh interpreter (spawned, never forked: forking a process
with threads is unsafe) that inherits only its control socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .._spec import WorkerSpec
from .base import Host, WorkerHandle, bootstrap_code, import_problem_code


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

    def describe_exit(self) -> str:
        code = self.process.poll()
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


class ProcessesHost(Host):
    name = "processes"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    @staticmethod
    def import_problem(modules: list[str], main_path: str | None) -> str | None:
        """Why these modules cannot be imported in a fresh process (one
        line, then the user's own traceback), or None when they all can."""
        code = import_problem_code(modules, main_path, report=True)
        result = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            return None
        return result.stderr.strip() or f"the import probe exited with status {result.returncode}"

    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", bootstrap_code(control_fd, process_of=spec.seq_id)],
                # Services list descriptors every worker needs (shared
                # memory, main-thread reply pipes) under extras["pass_fds"];
                # shared listening sockets keep their numbers in the child.
                pass_fds=(control_fd, *spec.extras.get("pass_fds", ()),
                          *(endpoint.fd for endpoint in spec.endpoints if endpoint.fd is not None)),
                stdin=subprocess.DEVNULL)
        finally:
            os.close(control_fd)
        return ProcessHandle(process)
