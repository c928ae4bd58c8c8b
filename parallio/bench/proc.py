"""What a server costs, read from /proc: CPU time and resident memory of the
whole process tree (the main process, its threads, and every worker process
it forked), so each host is charged for everything it runs."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold
    spaces): index 0 is the state, 1 the parent pid, 11 utime, 12 stime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:  # it exited between listing and reading
        return None
    return text[text.rindex(b")") + 2:].decode().split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class CpuTimes:
    """User and system CPU seconds, summed over processes (all threads)."""

    user: float
    system: float

    def __sub__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.user - other.user, self.system - other.system)

    @property
    def total(self) -> float:
        return self.user + self.system


def cpu_times(pids: list[int]) -> CpuTimes:
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return CpuTimes(user / _CLOCK_TICKS, system / _CLOCK_TICKS)


def rss_bytes(pids: list[int]) -> int:
    """Resident set size summed over ``pids`` (pages shared between worker
    processes count once per process, as ``ps`` would show them)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * _PAGE_SIZE
        except OSError:
            pass
    return total


class PeakRssSampler:
    """Samples the summed RSS of ``pids`` on a background thread; ``peak``
    is the highest sum seen between ``start()`` and ``stop()``."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self._pids = pids
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self._pids))
            if self._stopped.wait(self._interval):
                return

    def start(self) -> "PeakRssSampler":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stopped.set()
        self._thread.join()
        return self.peak


def set_session_priority(pid: int | str, nice: int) -> None:
    """Give the scheduling group of ``pid``'s session the niceness ``nice``.

    With autogroup scheduling (the Linux default), CPU time is shared
    between sessions first, and a process's own nice value only matters
    inside its session: a server started in a session of its own must have
    its group's niceness set to rank above other sessions' processes."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:  # no autogroup scheduling, or not allowed
        pass


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def machine_busy(seconds: float = 1.0) -> float:
    """The share of all CPUs that was busy over the next ``seconds``: run
    while nothing of the suite is working, it is what other processes
    take from the measurements."""
    busy_before, total_before = _cpu_jiffies()
    time.sleep(seconds)
    busy_after, total_after = _cpu_jiffies()
    return (busy_after - busy_before) / max(total_after - total_before, 1)
