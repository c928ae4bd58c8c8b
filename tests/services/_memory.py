"""Measures what a 200 MB shared buffer read by 2 workers adds to memory.

Run as ``python -m tests.services._memory HOST``; prints one JSON object.
Resident memory is read from ``/proc/PID/smaps_rollup`` of the main process
and, in the processes host, of each worker: ``rss`` counts a page once per
mapping and per process, ``pss`` divides a shared page among its mappers,
so the sum of PSS over the processes is what they really take together.
"""

from __future__ import annotations

import json
import os
import sys
import time

import parallio

SIZE = 200 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident(pid: int) -> dict[str, int]:
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                figures[name.lower()] = int(rest.split()[0]) * 1024
    return figures


def touch() -> tuple[int, int]:
    """In a worker: read every page of the shared buffer."""
    view = parallio.shared("big").view
    total = 0
    for offset in range(0, len(view), PAGE):
        total += view[offset]
    return os.getpid(), total


def report(result: tuple[int, int]) -> None:
    parallio.call_from_main_thread(_store, (result,))


_touched: list = []


def _store(result: tuple[int, int]) -> None:
    _touched.append(result)


def main(host: str) -> dict:
    before = resident(os.getpid())
    data = bytearray(b"\x01") * SIZE
    parallio.share("big", data)
    del data  # the memfd is now the one copy
    for _ in range(2):
        parallio.submit_work(touch, callback=report)
    # A timer far in the future keeps the workers (and their mappings)
    # alive while this thread measures.
    keep = parallio.timer(3600, 0, touch).start()
    runtime = parallio.start(workers=2, parallel=host, io="epoll")
    deadline = time.monotonic() + 60
    while len(_touched) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = sorted({os.getpid(), *(pid for pid, _total in _touched)})
    after = {pid: resident(pid) for pid in pids}
    keep.stop()
    runtime.join(10)
    parallio.unshare("big")
    return {
        "host": host,
        "touched": [total for _pid, total in _touched],
        "processes": len(pids),
        "rss_added": sum(f["rss"] for f in after.values()) - before["rss"],
        "pss_added": sum(f["pss"] for f in after.values()) - before["pss"],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
