"""Processes of interpreters: P processes, each running N isolated
interpreter workers.

Workers that share a process (threads, interpreters) share its fate: one
that calls ``os._exit`` or crashes in a C extension ends them all, and one
that hangs cannot be stopped. Workers in processes of their own are isolated
but cost a process each. This host puts workers in groups: worker *k* runs
in process ``(k - 1) // N``, as an isolated interpreter. A fatal fault ends
that process's N workers only, and the runtime restarts them; a hung worker
is ended the same way, with the rest of its process.

Every worker keeps its own control socket, reply pipe and listeners to the
main process, exactly as in the other hosts, so supervision, services and
statistics see P × N workers. A group process only starts interpreters: the
host sends it each worker's descriptors over a Unix socket (SCM_RIGHTS)
with the numbers they have in the main process; the group process reads the
worker's spec from its control socket, renumbers its descriptors, and runs
the worker in a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading

from .._spec import WorkerSpec
from .base import Host, WorkerHandle, bootstrap_code, close_handed_fds, close_host_fds, handed_fds
from .interpreters import InterpretersHost, run_in_new_interpreter
from .processes import CRASH_REPORTS, describe_returncode, spawn

log = logging.getLogger("parallio")

# A start request carries a worker's control socket, reply pipe and one
# listener per endpoint.
_MAX_FDS = 64
# Seconds group processes get to end on their own once the runtime is done.
_CLOSE_TIMEOUT = 5.0


class _Process:
    """One group process and the socket it takes start requests on."""

    def __init__(self, log_level: int, shared_fds: list[int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (f"import sys; sys.path[:] = {sys.path!r}\n{CRASH_REPORTS}"
                "from parallio.host.groups import serve_group\n"
                f"serve_group({theirs.fileno()}, {log_level})\n")
        try:
            # It inherits shared_fds (the services' shared memory) at the
            # same numbers, for every worker it will run.
            self.popen = spawn(code, [theirs.detach()], shared_fds)
        except BaseException:
            ours.close()
            raise
        self.command: socket.socket | None = ours

    def ended(self) -> bool:
        """True once the process is gone or going: its end of the command
        socket closed (known at once, unlike its exit status)."""
        command = self.command
        if command is None or self.popen.poll() is not None:
            return True
        poller = select.poll()
        poller.register(command, select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Tell it to end once its workers have."""
        if self.command is not None:
            self.command.close()
            self.command = None


class _Group:
    """The workers that share one process: numbers first..last."""

    def __init__(self, index: int, per_process: int) -> None:
        self.first = index * per_process + 1
        self.last = self.first + per_process - 1
        self.process: _Process | None = None


class GroupWorkerHandle(WorkerHandle):
    """A worker in a group process. Its end shows as its control socket
    closing; killing it kills its whole process."""

    def __init__(self, group: _Group, process: _Process) -> None:
        self.group = group
        self.process = process

    def is_alive(self) -> bool:
        return not self.process.ended()

    def join(self, timeout: float | None = None) -> None:
        # An interpreter ends on its own and its process stays: nothing to
        # wait for, unless the process is what ended (then reap it).
        if self.process.ended():
            self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.popen.poll() is None:
            self.process.popen.kill()
            self.process.wait()

    def kill_note(self) -> str:
        return (f"killing its process (pid {self.process.popen.pid}), and with it workers "
                f"{self.group.first}-{self.group.last}")

    def describe_exit(self) -> str:
        if not self.process.ended():
            return "ended"
        code = self.process.wait(1.0)
        what = "is ending" if code is None else describe_returncode(code)
        return f"ended with its process (pid {self.process.popen.pid}), which {what}"


class InterpreterProcessesHost(Host):
    name = "interpreter-processes"
    in_process = False
    can_kill_workers = True

    def __init__(self, processes: int, per_process: int) -> None:
        self.processes = processes
        self.per_process = per_process
        self._groups: dict[int, _Group] = {}

    @property
    def worker_host(self) -> str:
        return "interpreters"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return InterpretersHost.unavailable_reason()

    @classmethod
    def make(cls, parallel: str, processes: int,
             per_process: int) -> tuple["InterpreterProcessesHost", str]:
        """The host for ``processes`` processes of ``per_process``
        interpreters, and why: ``parallel`` must allow interpreters."""
        if parallel not in ("auto", "interpreters"):
            raise ValueError(f"--processes runs isolated interpreters in each process: use "
                             f"--parallel interpreters (or auto), not {parallel}")
        reason = cls.unavailable_reason()
        if reason:
            raise RuntimeError(f"--processes needs isolated interpreters: {reason}")
        return cls(processes, per_process), (
            f"{processes} process(es) of {per_process} isolated interpreter(s): a fatal fault "
            "ends one process, which is restarted, not the server")

    def start_worker(self, control_fd: int, spec: WorkerSpec) -> WorkerHandle:
        index = (spec.seq_id - 1) // self.per_process
        group = self._groups.get(index)
        if group is None:
            group = self._groups[index] = _Group(index, self.per_process)
        fds = handed_fds(control_fd, spec)
        try:
            process = group.process
            if process is None or process.ended():
                if process is not None:
                    process.close()
                process = group.process = _Process(spec.log_level,
                                                   spec.extras.get("pass_fds", []))
            assert process.command is not None
            socket.send_fds(process.command, [pickle.dumps(fds)], fds)
        except BaseException:
            close_handed_fds(control_fd, spec)
            raise
        for fd in fds:
            os.close(fd)  # the group process has its own copies
        return GroupWorkerHandle(group, process)

    def close(self) -> None:
        processes = [group.process for group in self._groups.values() if group.process]
        self._groups.clear()
        for process in processes:
            process.close()
        for process in processes:
            if process.wait(_CLOSE_TIMEOUT) is None:
                log.error("parallio: group process %d did not end; killing it", process.popen.pid)
                process.popen.kill()
                process.wait()


# -- inside a group process ----------------------------------------------------------

def serve_group(command_fd: int, log_level: int) -> None:
    """A group process's main: start a worker interpreter for each request
    on ``command_fd``; return once it closes and every worker has ended."""
    # The main process coordinates shutdown, as for worker processes.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s parallio[%(process)d]: %(message)s")
    command = socket.socket(fileno=command_fd)
    workers: list[threading.Thread] = []
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(command, 1 << 16, _MAX_FDS)
        except OSError:
            break
        if not message:
            break
        numbers = dict(zip(pickle.loads(message), fds))
        thread = threading.Thread(target=_run_worker, args=(numbers, fds[0]), daemon=True)
        thread.start()
        workers = [worker for worker in workers if worker.is_alive()] + [thread]
    command.close()
    for worker in workers:
        worker.join()


def _run_worker(numbers: dict[int, int], control_fd: int) -> None:
    """Run the worker whose descriptors are ``numbers`` (main process's
    number -> ours) in a fresh interpreter."""
    from ..worker import _read_spec

    try:
        spec = _read_spec(control_fd)
    except BaseException:
        log.exception("parallio: a worker's spec did not arrive")
        for fd in numbers.values():
            os.close(fd)
        return
    spec.listen_fds = [numbers[fd] if fd >= 0 else -1 for fd in spec.listen_fds]
    if spec.reply_fd is not None:
        spec.reply_fd = numbers[spec.reply_fd]
    code = bootstrap_code(control_fd, spec.seq_id, spec_pickle=pickle.dumps(spec))
    try:
        error = run_in_new_interpreter(code)
        if error:
            log.error("worker %d: its interpreter raised %s", spec.seq_id, error)
    finally:
        close_host_fds(control_fd, spec)

