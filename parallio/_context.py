"""Which worker the running code belongs to.

Thread-local, so it is right in every host: one thread per worker in the
threads host, one interpreter (with its own module state) per worker in the
interpreters host, one process per worker in the processes host. The typed
accessor is :func:`parallio.worker.current_worker`; this leaf module holds
the state so that layers below the worker can reach it too.
"""

from __future__ import annotations

import threading
from typing import Any


class _Local(threading.local):
    #: The running :class:`parallio.worker.Worker`, None on the main thread.
    worker: Any = None
    # True while a worker imports the user's main script: calls to server(),
    # register() and run() made at its top level must not act again there.
    importing_main: bool = False


local = _Local()


def in_worker_import() -> bool:
    return local.importing_main


def set_worker(worker: Any) -> None:
    local.worker = worker
