"""``--reload``: for development, restart the server when its source changes.

The command line runs again, without ``--reload``, in a child process; this
process only watches. Every ``.py`` file under the watched directories is
polled with ``os.stat`` (no dependency, no inotify limits): a changed, new
or removed file stops the child gracefully (SIGTERM, as the command handles
it) and starts a fresh one, which imports everything anew. A child that
exits by itself (a syntax error at import, say) is started again at the
next change. SIGINT and SIGTERM stop the child and then this process;
SIGHUP goes to the child (a reload of its workers).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger("parallio")

POLL_INTERVAL = 0.5
# Seconds a child gets to drain before it is killed.
_STOP_TIMEOUT = 30.0
# Directories never watched: caches, virtual environments, VCS metadata.
_SKIPPED = frozenset(("__pycache__", "node_modules", "site-packages"))


def without_reload_options(argv: list[str]) -> list[str]:
    """``argv`` less ``--reload`` and ``--reload-dir DIR``."""
    kept = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--reload":
            pass
        elif arg == "--reload-dir":
            skip_next = True
        elif not arg.startswith("--reload-dir="):
            kept.append(arg)
    return kept


def sources(directories: list[str]) -> dict[str, tuple[int, int]]:
    """Every ``.py`` file under ``directories``: path -> (mtime_ns, size)."""
    found = {}
    for top in directories:
        for directory, subdirectories, files in os.walk(top):
            subdirectories[:] = [name for name in subdirectories
                                 if not name.startswith(".") and name not in _SKIPPED]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    try:
                        status = os.stat(path)
                    except OSError:
                        continue  # removed meanwhile
                    found[path] = (status.st_mtime_ns, status.st_size)
    return found


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(path for path in before.keys() | after.keys()
                  if before.get(path) != after.get(path))


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("parallio: --reload: the server did not stop; killing it")
            child.kill()
            child.wait()


def serve_with_reload(directories: list[str]) -> None:
    """Run this process's command line, without its reload options, in a
    child restarted whenever a Python file under ``directories`` changes;
    return once stopped by SIGINT or SIGTERM."""
    command = [sys.executable, "-m", "parallio", *without_reload_options(sys.argv[1:])]
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    watched = sources(directories)
    log.info("parallio: --reload: watching %d Python file(s) under %s", len(watched),
             ", ".join(directories))
    child = subprocess.Popen(command)
    exit_reported = False
    try:
        while True:
            time.sleep(POLL_INTERVAL)
            while received:
                signum = received.pop(0)
                if signum == signal.SIGHUP:
                    if child.poll() is None:
                        child.send_signal(signal.SIGHUP)
                    continue
                if child.poll() is None:
                    child.send_signal(signum)  # a Ctrl-C reached it already: no matter
                    child.wait()
                return
            if child.poll() is not None and not exit_reported:
                exit_reported = True
                log.error("parallio: --reload: the server exited with status %d; it starts "
                          "again at the next change", child.returncode)
            current = sources(directories)
            changed = _changed(watched, current)
            if changed:
                more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
                log.info("parallio: --reload: %s changed%s; restarting", changed[0], more)
                watched = current
                _stop(child)
                child = subprocess.Popen(command)
                exit_reported = False
    finally:
        _stop(child)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
