"""The ASGI lifespan protocol (spec 2.0), run once per event loop: startup
before the loop's server accepts, shutdown after it stopped serving."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from .config import ASGIApp, Message

__all__ = ["Lifespan", "LifespanFailure"]

log = logging.getLogger("parallio.asgi")


class LifespanFailure(Exception):
    """The application's startup failed; the server must not serve."""


class Lifespan:
    """One application's lifespan on the running loop.

    ``state`` is the namespace the application fills during startup; every
    request scope of this loop gets a shallow copy of it.

    With ``mode`` "auto", an application that raises on the lifespan scope
    before completing startup is taken not to speak the protocol (the spec's
    rule): it is served without lifespan events. With "on" that is a
    failure, like ``lifespan.startup.failed``.
    """

    def __init__(self, app: ASGIApp, mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._task: Optional[asyncio.Task[None]] = None
        self._phase_done: Optional[asyncio.Future[Optional[str]]] = None
        self._phase = ""
        self._supported = mode != "off"

    async def startup(self) -> None:
        """Run the application's startup; LifespanFailure with its message
        if it failed."""
        if not self._supported:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._main())
        failure = await self._run_phase("startup")
        if failure is not None:
            raise LifespanFailure(failure)

    async def shutdown(self) -> None:
        """Run the application's shutdown (if its startup ran); a failure is
        logged, not raised: the server is stopping either way."""
        if not self._supported or self._task is None or self._task.done():
            return
        failure = await self._run_phase("shutdown")
        if failure is not None:
            log.error("ASGI lifespan shutdown failed: %s", failure)
        if not self._task.done():
            self._task.cancel()

    async def _run_phase(self, phase: str) -> Optional[str]:
        assert self._task is not None
        self._phase = phase
        self._phase_done = asyncio.get_running_loop().create_future()
        self._events.put_nowait({"type": f"lifespan.{phase}"})
        await asyncio.wait((self._phase_done, self._task), return_when=asyncio.FIRST_COMPLETED)
        if self._phase_done.done():
            return self._phase_done.result()
        # The application returned or raised without answering.
        error = self._task.exception() if not self._task.cancelled() else None
        if phase == "startup" and self.mode == "auto":
            log.info("ASGI lifespan protocol appears unsupported; serving without it%s",
                     f" ({type(error).__name__}: {error})" if error else "")
            self._supported = False
            return None
        if error is not None:
            log.error("ASGI lifespan %s raised", phase, exc_info=error)
            return f"{type(error).__name__}: {error}"
        return f"the application returned during lifespan {phase} without answering"

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        await self.app(scope, self._receive, self._send)

    async def _receive(self) -> Message:
        return await self._events.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        phase = self._phase
        if kind not in (f"lifespan.{phase}.complete", f"lifespan.{phase}.failed"):
            raise RuntimeError(f"unexpected ASGI message {kind!r} during lifespan {phase}")
        assert self._phase_done is not None
        if not self._phase_done.done():
            failed = kind.endswith(".failed")
            reason = str(message.get("message") or f"lifespan.{phase}.failed")
            self._phase_done.set_result(reason if failed else None)
