"""Hosts: where workers run -- threads, subinterpreters or processes."""

from __future__ import annotations

from .base import Host, WorkerHandle
from .groups import InterpreterProcessesHost
from .interpreters import InterpretersHost
from .processes import ProcessesHost
from .threads import ThreadsHost, gil_disabled

HOSTS: dict[str, type[Host]] = {
    "threads": ThreadsHost,
    "interpreters": InterpretersHost,
    "processes": ProcessesHost,
}


def choose_host(requested: str, modules: list[str], main_path: str | None) -> tuple[type[Host], str]:
    """Resolve ``auto`` and check the host can run here.

    Returns the host class and a sentence saying why it was chosen. ``auto``
    takes threads when the GIL is disabled; else isolated interpreters when
    this Python has them and every module the workers need imports in one;
    else processes.
    """
    if requested != "auto":
        host = HOSTS.get(requested)
        if host is None:
            raise ValueError(f"unknown host {requested!r}; choose auto, {', '.join(HOSTS)}")
        reason = host.unavailable_reason()
        if reason:
            raise RuntimeError(f"the {requested} host is not available: {reason}")
        if requested == "threads" and not gil_disabled():
            return host, "asked for; the GIL is enabled, so its workers take turns"
        return host, "asked for"
    if gil_disabled():
        return ThreadsHost, "the GIL is disabled"
    reason = InterpretersHost.unavailable_reason()
    if reason is None:
        problem = InterpretersHost.import_problem(modules, main_path)
        if problem is None:
            return InterpretersHost, "isolated subinterpreters are available"
        last_line = problem.strip().splitlines()[-1]
        reason = f"a module does not import in an isolated subinterpreter ({last_line})"
    return ProcessesHost, reason
