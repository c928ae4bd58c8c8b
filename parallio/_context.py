"""Which worker, and which connection, the running code belongs to.

Thread-local, so it is right in every host: one thread per worker in the
threads host, one interpreter (with its own module state) per worker in the
interpreters host, one process per worker in the processes host.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .transport import Transport
    from .worker import Worker


class _Local(threading.local):
    worker: "Worker | None" = None
    transport: "Transport | None" = None
    # True while a worker imports the user's main script: calls to server(),
    # register() and run() made at its top level must not act again there.
    importing_main: bool = False


local = _Local()


def current_worker() -> "Worker | None":
    return local.worker


def in_worker_import() -> bool:
    return local.importing_main


def set_worker(worker: Any) -> None:
    local.worker = worker
