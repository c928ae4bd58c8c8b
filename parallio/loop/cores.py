"""An asyncio program on every core: :func:`run_on_all_cores`.

The same coroutine function runs in N parallio workers -- threads on a
free-threaded build, isolated subinterpreters (3.13+) where its modules
load in one, else processes: the host ``auto`` picks, logged in one line
with the reason -- each on an :class:`~parallio.loop.events.EventLoop` over
that worker's own engine. The worker stays a parallio worker: its control
socket, stop and drain, stats and the services (timers, work items,
main-thread calls) go through the same loop, which :class:`AsyncioDriver`
runs in the worker's place (:class:`parallio.worker.Driver`).

Each worker opens its own sockets; a server that wants the kernel to
spread connections over the workers listens with ``reuse_port=True``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from typing import Any, Callable, Sequence

from .. import _context
from .._ref import ObjectRef
from ..runtime import DEFAULT_DRAIN_TIMEOUT, Runtime
from ..services._hub import exc_from_payload, exc_payload, ref_of, resolve, result_payload
from ..worker import Worker, current_worker
from .events import EventLoop

__all__ = ["run_on_all_cores", "AsyncioDriver"]

log = logging.getLogger("parallio")

#: The key of this module's part of ``WorkerSpec.extras``.
KEY = "asyncio"
# Tasks left when a worker's loop stops get this long to finish once
# cancelled (a task that ignores cancellation must not hold the worker).
_CANCEL_GRACE = 5.0


def run_on_all_cores(main: Callable[..., Any] | str, workers: int | None = None,
                     parallel: str = "auto", io: str = "auto", *, args: tuple = (),
                     imports: Sequence[str] = (),
                     drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
                     pass_fds: Sequence[int] = ()) -> list[Any]:
    """Run ``main(*args)``, a coroutine function, in ``workers`` workers
    (default: one per CPU this process may use), each on its own parallio
    event loop, until every one has returned; return their results in
    worker order.

    ``main`` is a coroutine function defined at the top level of a module
    or of the main script, or its import path ``"module:function"``.
    ``parallel`` is ``auto``, ``threads``, ``interpreters`` or
    ``processes``; ``io`` is ``auto``, ``uring`` or ``epoll``. ``args``
    are pickled to the workers. ``imports`` names more modules ``main``
    will import (``"module"`` or ``"module:attribute"``), an application
    it loads by name, say: ``auto`` checks that they import in an isolated
    interpreter before choosing that host. ``pass_fds`` are descriptors
    that worker processes inherit at the same numbers (shared listening
    sockets, say).

    SIGINT or SIGTERM cancels ``main`` in every worker, which then has
    ``drain_timeout`` seconds to finish. An exception escaping ``main`` in
    one worker stops all of them and is raised here, with that worker's
    traceback as its ``__cause__``.
    """
    if _context.in_worker_import():
        return []   # a script's top level, as a worker loads it
    if current_worker() is not None:
        raise RuntimeError("parallio.loop.run_on_all_cores() belongs to the main thread, "
                           "not to a worker")
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple, not {type(args).__name__}")
    ref = _main_ref(main, args)
    runtime = Runtime([], workers, parallel, io, drain_timeout, extras={
        "refs": [ref, *(ObjectRef(name) for name in imports)],
        "driver": ObjectRef(f"{__name__}:AsyncioDriver"),
        KEY: {"main": ref, "args": args},
        "pass_fds": list(pass_fds),
    })
    outcome = _Outcome(runtime)
    runtime.add_message_handler("asyncio_done", outcome.done)
    runtime.run()
    if outcome.failure is not None:
        raise outcome.failure
    return [outcome.results.get(seq_id) for seq_id in range(1, runtime.workers + 1)]


def _main_ref(main: Callable[..., Any] | str, args: tuple) -> ObjectRef:
    if isinstance(main, str):
        ref = ObjectRef.of(main)
        try:
            target = ref.resolve()
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"cannot import {main!r}: {exc}") from exc
        ref = ObjectRef(ref.path, target)
    else:
        ref = ref_of(main, "coroutine function")
        target = main
    if not inspect.iscoroutinefunction(target):
        raise TypeError(f"{ref.path} must be a coroutine function (async def), "
                        f"not {type(target).__name__}")
    try:
        inspect.signature(target).bind(*args)
    except TypeError as exc:
        raise TypeError(f"{ref.path} cannot be called with {len(args)} argument(s): {exc}") from None
    return ref


class _Outcome:
    """What the workers' main() calls returned, gathered on the main thread."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.results: dict[int, Any] = {}
        self.failure: BaseException | None = None

    def done(self, seq_id: int, ok: bool, payload: Any) -> None:
        if ok:
            self.results[seq_id] = pickle.loads(payload)
            return
        if self.failure is None:
            self.failure = exc_from_payload(payload)
            log.debug("parallio: main() failed in worker %d; stopping every worker", seq_id)
        self.runtime.stop(wait=False)


class AsyncioDriver:
    """A worker's turns as a parallio asyncio loop on the worker's engine,
    running the coroutine function its spec names (see the module
    docstring)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        options = worker.spec.extras[KEY]
        self.main_ref: ObjectRef = options["main"]
        self.args: tuple = options["args"]
        self.loop = EventLoop(worker.engine, counters=worker.counters)
        self.task: asyncio.Task[Any] | None = None
        self.draining = False
        worker.busy_checks.append(self.busy)
        worker.stats_providers.append(self._stats)

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, *args)

    def start(self) -> None:
        main = resolve(self.main_ref.path) if self.main_ref.obj is None else self.main_ref.obj
        coroutine = main(*self.args)
        if not asyncio.iscoroutine(coroutine):
            raise TypeError(f"{self.main_ref.path} returned {type(coroutine).__name__}, not a "
                            f"coroutine: it must be a coroutine function (async def)")
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(coroutine)
        self.task.add_done_callback(self._main_done)

    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def _main_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            if not self.draining:
                self._report(False, exc_payload(asyncio.CancelledError(
                    f"main() of worker {self.worker.seq_id} was cancelled")))
        elif task.exception() is not None:
            self._report(False, exc_payload(task.exception()))  # type: ignore[arg-type]
        else:
            self._report(*result_payload(task.result()))
        self.worker.report_idle()

    def _report(self, ok: bool, payload: Any) -> None:
        self.worker.send_to_main(("asyncio_done", ok, payload))

    def drain(self, timeout: float) -> None:
        self.draining = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def run(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self._close()

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.stop()

    def _close(self) -> None:
        loop = self.loop
        try:
            tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=_CANCEL_GRACE))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _stats(self) -> dict[str, Any]:
        return {"connections": self.loop.transport_count(),
                "connections_total": self.loop.connections_total}
