"""What every contender serves: the same three routes, the same work.

``BenchApp`` is parallio's side (the ``http11`` fast path: ``GET /name`` calls
``name``). The peers (asyncio, uvloop) import the constants and
:func:`cpu_work` from this module by file path, so that this module must not
import parallio: a peer's memory figures would otherwise carry parallio's.
"""

from __future__ import annotations

from typing import Any

PLAINTEXT_BODY = b"Hello, World!"
JSON_MESSAGE = {"message": "Hello, World!"}

#: Iterations of :func:`cpu_work` per ``/cpu`` request: about 1 ms of pure
#: Python on CPython 3.11 on the project's machine (1.3 ms on 3.13). Fixed,
#: not calibrated at run time, so every contender does exactly the same work.
CPU_ROUNDS = 12_500
CPU_PATH = b"/cpu"


def cpu_work(path: bytes, rounds: int = CPU_ROUNDS) -> int:
    """A deterministic FNV-1a-style hash loop over the request path.

    Pure Python integer work that holds the GIL the whole time: the scaling
    scenario measures how many of these a server can run in parallel.
    """
    value = 2166136261
    length = len(path)
    for index in range(rounds):
        value = ((value ^ (path[index % length] + index)) * 16777619) & 0xFFFFFFFF
    return value


def cpu_result(path: bytes = CPU_PATH) -> dict[str, Any]:
    """The ``/cpu`` response document."""
    return {"hash": cpu_work(path), "rounds": CPU_ROUNDS}


class BenchApp:
    """The benchmark routes on parallio's HTTP fast path.

    Each answer is built by its handler on every request: nothing is cached
    past what the fast path itself does for every application (the Date
    header).
    """

    http11 = True

    def plaintext(self, transport: Any, data: Any) -> bytes:
        return PLAINTEXT_BODY

    def json(self, transport: Any, data: Any) -> dict[str, str]:
        return {"message": "Hello, World!"}

    def cpu(self, transport: Any, data: Any) -> dict[str, Any]:
        return cpu_result(CPU_PATH)
