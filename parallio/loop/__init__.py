"""asyncio on parallio's completion engines, one loop per worker on every core.

The surface is uvloop's::

    import asyncio, parallio.loop

    parallio.loop.run(main())                 # like uvloop.run / asyncio.run
    parallio.loop.run_on_all_cores(main)      # main() in N workers, best host
    parallio.loop.install()                   # asyncio's policy makes these loops
    loop = parallio.loop.new_event_loop()

:class:`EventLoop` (:mod:`.events`) is asyncio's own scheduling with its I/O
through one parallio engine (io_uring or epoll); :mod:`.transports` holds
its completion-based socket transports; :mod:`.cores` runs a coroutine
function in parallio workers on every core, each on a loop over its
worker's engine.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

from .cores import run_on_all_cores
from .events import EventLoop

__all__ = ["EventLoop", "EventLoopPolicy", "install", "new_event_loop", "run",
           "run_on_all_cores"]

T = TypeVar("T")


def new_event_loop(io: str = "auto") -> EventLoop:
    """A new loop with an engine of its own: ``io`` is ``auto`` (io_uring
    where the kernel allows it, else epoll), ``uring`` or ``epoll``."""
    return EventLoop(io=io)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy (child watchers included), making parallio
    loops: ``asyncio.set_event_loop_policy(parallio.loop.EventLoopPolicy())``."""

    def _loop_factory(self) -> EventLoop:
        return new_event_loop()


def install() -> None:
    """Make asyncio create parallio loops (``asyncio.run``, ``new_event_loop``)."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None, io: str = "auto") -> T:
    """Run the coroutine ``main`` on a new parallio loop and return its
    result, as ``asyncio.run`` does (cancelling what is left, then closing
    async generators, the default executor and the loop)."""
    with asyncio.Runner(debug=debug, loop_factory=lambda: new_event_loop(io)) as runner:
        return runner.run(main)
