"""Work items: PyParallel's ``submit_work``, and ``parallio.map``.

``submit_work`` from the main thread hands the item to a worker -- queued
until :func:`parallio.run` starts them, else at once to the worker with the
fewest unfinished items. ``submit_work`` inside a worker runs the item in
that same worker, after the current callback returns. Either way the
callback (or errback) runs in the worker that ran the function, as in
PyParallel.

A work item runs on its worker's loop, between connections: one that blocks
(``time.sleep``, a blocking socket) blocks its whole worker meanwhile. Keep
items CPU-bound or short, and split long jobs into several items.
"""

from __future__ import annotations

import builtins
import collections
import itertools
import pickle
import threading
from typing import Any, Callable, Iterable

from .. import _context
from ..runtime import Runtime, cpu_count
from ._hub import (MainHub, WorkerHub, current_hub, dumps, exc_from_payload, exc_payload,
                   hub_of, on_main_setup, on_pending, on_worker_setup, ref_of, resolve,
                   result_payload, worker_hub)

__all__ = ["submit_work", "map", "WorkerLost"]


class WorkerLost(RuntimeError):
    """A worker stopped or died before it finished a work item or a part of
    a :func:`parallio.map`."""


_item_ids = itertools.count(1)


class _Item:
    """A work item submitted from the main thread."""

    __slots__ = ("item_id", "payload", "name", "refs")

    def __init__(self, payload: bytes, name: str, refs: list) -> None:
        self.item_id = next(_item_ids)
        self.payload = payload
        self.name = name
        self.refs = refs


#: Items submitted before run(), for the next runtime it starts.
_pending: collections.deque[_Item] = collections.deque()
_pending_lock = threading.Lock()


def _pending_refs() -> list:
    """Import paths the queued items need, for the host probe of run()."""
    with _pending_lock:
        return [ref for item in _pending for ref in item.refs]


def submit_work(func: Callable[..., Any], args: Any = (), kwds: dict[str, Any] | None = None,
                callback: Callable[[Any], Any] | None = None,
                errback: Callable[[BaseException], Any] | None = None) -> None:
    """Run ``func(*args, **kwds)`` in a worker, then ``callback(result)`` --
    or ``errback(exception)`` if it raised -- in that same worker.

    From the main thread, before :func:`parallio.run` the item waits for
    ``run()`` (which hands items out round-robin and returns once every item,
    and what it submitted in turn, has finished); while workers run it goes
    to the one with the fewest unfinished items. Inside a worker the item
    runs in this worker after the current callback returns, and ``func``,
    ``callback`` and ``errback`` may be any callables.

    From the main thread they must be importable by every host: defined at
    the top level of a module or of the main script, and ``args``/``kwds``
    are pickled (the worker gets a copy). An exception that no errback
    handles -- or that the callback or errback raises -- is logged and
    re-raised by :func:`parallio.run` when it returns.

    Args:
      func: what to run.
      args: positional arguments, a tuple.
      kwds: keyword arguments.
      callback: called with the result, in the worker.
      errback: called with the exception, in the worker.

    Raises:
      TypeError: a function cannot be named by import path, or an
        argument cannot be pickled.
    """
    if not isinstance(args, (tuple, builtins.list)):
        raise TypeError(f"args must be a tuple of arguments, not {type(args).__name__}: "
                        "write (value,) for one argument")
    kwds = dict(kwds or {})
    hub = worker_hub()
    if hub is not None:
        _counters(hub)["work_submitted"] += 1
        hub.enqueue(lambda: _finish_local(hub, func, tuple(args), kwds, callback, errback))
        return
    if _context.in_worker_import():
        return  # a worker re-reading the main script: its main thread submitted it
    refs = [ref_of(func, "work function")]
    callback_ref = ref_of(callback, "callback") if callback is not None else None
    errback_ref = ref_of(errback, "errback") if errback is not None else None
    refs += [ref for ref in (callback_ref, errback_ref) if ref is not None]
    payload = dumps((refs[0], tuple(args), kwds, callback_ref, errback_ref))
    item = _Item(payload, refs[0].path, refs)
    # Under the lock: a runtime starting now takes the pending items under
    # it, after it became current.
    with _pending_lock:
        main = current_hub()
        if main is None:
            _pending.append(item)
            return
    main.service(_WorkMain).submit(item)


def _run(func: Callable, args: tuple, kwds: dict, callback: Callable | None,
         errback: Callable | None) -> BaseException | None:
    """Run an item; returns the exception nobody handled, if any."""
    try:
        result = func(*args, **kwds)
    except Exception as exc:
        if errback is None:
            return exc
        try:
            errback(exc)
        except Exception as errback_exc:
            return errback_exc
        return None
    if callback is not None:
        try:
            callback(result)
        except Exception as callback_exc:
            return callback_exc
    return None


def _finish_local(hub: WorkerHub, func: Callable, args: tuple, kwds: dict,
                  callback: Callable | None, errback: Callable | None) -> None:
    error = _run(func, args, kwds, callback, errback)
    counters = _counters(hub)
    counters["work_done"] += 1
    if error is not None:
        counters["work_errors"] += 1
        hub.send(("svc_unhandled", f"work item {_name(func)} failed", exc_payload(error)))


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


# -- the main side ------------------------------------------------------------------

class _WorkMain:
    """Hands items to workers and counts those unfinished, so run() knows
    when nothing is left."""

    def __init__(self, hub: MainHub) -> None:
        self.hub = hub
        self._lock = threading.Lock()
        self.unfinished = 0
        self._inflight: dict[int, dict[int, _Item]] = collections.defaultdict(dict)
        self._waiting: collections.deque[_Item] = collections.deque()
        self._assigned: dict[int, list[_Item]] = collections.defaultdict(builtins.list)
        # Submitted from a user thread, not yet taken by the supervisor.
        self._submitted: dict[int, _Item] = {}
        hub.runtime.busy_checks.append(lambda: self.unfinished > 0)
        hub.runtime.add_message_handler("svc_work_done", self._done)
        hub.runtime.add_message_handler("svc_unhandled", self._unhandled)
        hub.on_ready(self._ready)
        hub.on_gone(self._gone)
        hub.on_close(self._closed)
        self._adopted = hub.private  # a map's own runtime takes no queued item

    def _adopt(self) -> None:
        """Take the items queued for the next run(), round-robin."""
        self._adopted = True
        with _pending_lock:
            items = builtins.list(_pending)
            _pending.clear()
        workers = self.hub.runtime.workers
        with self._lock:
            for index, item in enumerate(items):
                self._assigned[index % workers + 1].append(item)
            self.unfinished += len(items)

    def submit(self, item: _Item) -> None:
        with self._lock:
            if not self.hub.live:  # it just stopped: the item waits for the next run()
                with _pending_lock:
                    _pending.append(item)
                return
            self.unfinished += 1
            self._submitted[item.item_id] = item
        self.hub.call_soon(lambda: self._take(item))

    def _take(self, item: _Item) -> None:
        with self._lock:
            taken = self._submitted.pop(item.item_id, None)
        if taken is not None:
            self._dispatch(item)

    def _dispatch(self, item: _Item) -> None:
        ready = sorted(self.hub.ready, key=lambda seq_id: len(self._inflight[seq_id]))
        for seq_id in ready:
            self._inflight[seq_id][item.item_id] = item
            if self.hub.send(seq_id, ("svc_work", item.item_id, item.payload)):
                return
            del self._inflight[seq_id][item.item_id]
        self._waiting.append(item)

    def _ready(self, seq_id: int) -> None:
        if not self._adopted:
            self._adopt()
        for item in self._assigned.pop(seq_id, ()):
            self._inflight[seq_id][item.item_id] = item
            self.hub.send(seq_id, ("svc_work", item.item_id, item.payload))
        waiting, self._waiting = self._waiting, collections.deque()
        for item in waiting:
            self._dispatch(item)

    def _done(self, seq_id: int, item_id: int, error: tuple | None) -> None:
        item = self._inflight[seq_id].pop(item_id, None)
        if item is None:
            return
        with self._lock:
            self.unfinished -= 1
        if error is not None:
            self.hub.unhandled(exc_from_payload(error),
                               f"work item {item.name} failed in worker {seq_id}")

    def _unhandled(self, seq_id: int, what: str, error: tuple) -> None:
        self.hub.unhandled(exc_from_payload(error), f"{what} in worker {seq_id}")

    def _gone(self, seq_id: int) -> None:
        lost = self._inflight.pop(seq_id, {})
        with self._lock:
            self.unfinished -= len(lost)
        for item in lost.values():
            self.hub.unhandled(
                WorkerLost(f"worker {seq_id} stopped or died before work item {item.name} "
                           "finished"), "a work item was lost")

    def _closed(self) -> None:
        # What no worker took runs at the next run(), as if submitted then.
        with self._lock:
            leftover = [*self._submitted.values(), *self._waiting,
                        *(item for items in self._assigned.values() for item in items)]
            self._submitted.clear()
        with _pending_lock:
            _pending.extend(leftover)
        self._waiting.clear()
        self._assigned.clear()
        for seq_id in builtins.list(self._inflight):
            self._gone(seq_id)
        self.unfinished = 0


def _counters(hub: WorkerHub) -> dict[str, int]:
    return hub.service(_WorkWorker).counters


class _WorkWorker:
    """Runs items and map chunks the main thread sent to this worker."""

    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub
        self.counters = {
            "work_submitted": 0, "work_done": 0, "work_errors": 0, "map_chunks": 0}
        self._cancelled_maps: set[int] = set()
        worker = hub.worker
        worker.add_control_handler("svc_work", self._on_work)
        worker.add_control_handler("svc_map", self._on_map)
        worker.add_control_handler("svc_map_cancel", self._on_map_cancel)
        worker.stats_providers.append(self._stats)

    def _stats(self) -> dict[str, int]:
        return dict(self.counters, work_queued=self.hub.job_count())

    def _on_work(self, item_id: int, payload: bytes) -> None:
        self.counters["work_submitted"] += 1
        self.hub.enqueue(lambda: self._run_item(item_id, payload))

    def _run_item(self, item_id: int, payload: bytes) -> None:
        try:
            ref, args, kwds, callback_ref, errback_ref = pickle.loads(payload)
            func = resolve(ref.path)
            callback = resolve(callback_ref.path) if callback_ref is not None else None
            errback = resolve(errback_ref.path) if errback_ref is not None else None
        except Exception as exc:
            error: BaseException | None = exc
        else:
            error = _run(func, args, kwds, callback, errback)
        self.counters["work_done"] += 1
        if error is not None:
            self.counters["work_errors"] += 1
        self.hub.send(("svc_work_done", item_id, None if error is None else exc_payload(error)))

    def _on_map(self, job_id: int, index: int, payload: bytes) -> None:
        self.hub.enqueue(_MapChunk(self, job_id, index, payload))

    def _on_map_cancel(self, job_id: int) -> None:
        self.hub.cancel_jobs(lambda job: getattr(job, "job_id", None) == job_id)


class _MapChunk:
    """One slice of a map, run as a job so a cancel can drop it unrun."""

    __slots__ = ("owner", "job_id", "index", "payload")

    def __init__(self, owner: _WorkWorker, job_id: int, index: int, payload: bytes) -> None:
        self.owner = owner
        self.job_id = job_id
        self.index = index
        self.payload = payload

    def __call__(self) -> None:
        try:
            ref, items = pickle.loads(self.payload)
            func = resolve(ref.path)
            ok, value = result_payload([func(item) for item in items])
        except Exception as exc:
            ok, value = False, exc_payload(exc)
        self.owner.counters["map_chunks"] += 1
        self.owner.hub.send(("svc_map_done", self.job_id, self.index, ok, value))


# -- parallio.map -------------------------------------------------------------------

#: Chunks each worker holds at once: one running, one queued behind it, so
#: a worker never waits for the main thread between chunks.
_CHUNKS_IN_FLIGHT = 2

_job_ids = itertools.count(1)


class _MapJob:
    def __init__(self, chunks: list[bytes]) -> None:
        self.job_id = next(_job_ids)
        self.chunks = chunks
        self.results: list[Any] = [None] * len(chunks)
        self.next_chunk = 0
        self.remaining = len(chunks)
        self.inflight: dict[int, set[int]] = collections.defaultdict(set)
        self.error: BaseException | None = None
        self.done = threading.Event()


class _MapMain:
    def __init__(self, hub: MainHub) -> None:
        self.hub = hub
        # Added from the caller's thread, finished on the supervisor's.
        self._lock = threading.Lock()
        self.jobs: dict[int, _MapJob] = {}
        hub.runtime.busy_checks.append(lambda: bool(self.jobs))
        hub.runtime.add_message_handler("svc_map_done", self._done)
        hub.on_ready(self._fill)
        hub.on_gone(self._gone)
        hub.on_close(self._closed)

    def add(self, job: _MapJob) -> None:
        """Take ``job`` (from any thread); its chunks go out from the
        supervisor thread."""
        with self._lock:
            if not self.hub.live:
                raise WorkerLost("the runtime stopped before the map started")
            self.jobs[job.job_id] = job
        self.hub.call_soon(self._fill_all)

    def _fill_all(self) -> None:
        for seq_id in sorted(self.hub.ready):
            self._fill(seq_id)

    def cancel(self, job: _MapJob, error: BaseException) -> None:
        with self._lock:
            if self.jobs.pop(job.job_id, None) is None:
                return
        job.error = error
        job.done.set()
        for seq_id in self.hub.ready:
            if job.inflight.get(seq_id):
                self.hub.send(seq_id, ("svc_map_cancel", job.job_id))

    def _fill(self, seq_id: int) -> None:
        with self._lock:
            jobs = builtins.list(self.jobs.values())
        for job in jobs:
            inflight = job.inflight[seq_id]
            while len(inflight) < _CHUNKS_IN_FLIGHT and job.next_chunk < len(job.chunks):
                index = job.next_chunk
                if not self.hub.send(seq_id, ("svc_map", job.job_id, index, job.chunks[index])):
                    return
                job.next_chunk += 1
                inflight.add(index)

    def _done(self, seq_id: int, job_id: int, index: int, ok: bool, value: Any) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return  # cancelled: a late chunk
        job.inflight[seq_id].discard(index)
        if not ok:
            self.cancel(job, exc_from_payload(value))
            return
        job.results[index] = value
        job.remaining -= 1
        if job.remaining == 0:
            with self._lock:
                del self.jobs[job_id]
            job.done.set()
        else:
            self._fill(seq_id)

    def _gone(self, seq_id: int) -> None:
        with self._lock:
            jobs = builtins.list(self.jobs.values())
        for job in jobs:
            if job.inflight.get(seq_id):
                self.cancel(job, WorkerLost(
                    f"worker {seq_id} stopped or died while running part of a map"))

    def _closed(self) -> None:
        with self._lock:
            jobs = builtins.list(self.jobs.values())
        for job in jobs:
            self.cancel(job, WorkerLost("the runtime stopped before the map finished"))


def map(func: Callable[[Any], Any], iterable: Iterable[Any], workers: int | None = None,
        parallel: str = "auto", *, io: str = "auto", chunksize: int | None = None,
        timeout: float | None = None) -> builtins.list:
    """``[func(item) for item in iterable]``, computed across workers; the
    results come back in order.

    From the main thread, the running workers do it (those of
    :func:`parallio.start`); with none running, ``map`` starts ``workers``
    workers on the ``parallel`` host just for this call and stops them
    after. Items and results are pickled in every host.

    Inside a worker -- which must not wait on other workers, lest every
    worker wait on another -- the items are computed right there, one after
    the other, and ``workers``/``parallel`` are ignored.

    Args:
      func: a function of one argument at the top level of a module or of
        the main script.
      iterable: the items; consumed whole before any work starts.
      workers: how many workers a map of its own starts (default: as many
        as there are CPUs, at most one per chunk).
      parallel: the host of those workers, as :func:`parallio.run` takes.
      io: their I/O engine.
      chunksize: items per message (default: about four chunks a worker).
      timeout: seconds to wait for the results.

    Raises:
      WorkerLost: a worker stopped or died before its part was done.
      TimeoutError: ``timeout`` passed first.
      RuntimeError: called in a main-thread call while :func:`parallio.run`
        serves (it would block the loop that delivers the results), or at
        the top level of a main script re-read by a worker.
      Exception: the first exception ``func`` raised, with the worker's
        traceback as its ``__cause__``.
    """
    items = builtins.list(iterable)
    if worker_hub() is not None:
        return [func(item) for item in items]
    if _context.in_worker_import():
        raise RuntimeError("parallio.map() at the top level of the main script runs again in "
                           "every worker that loads it: call it under "
                           "if __name__ == '__main__':")
    ref = ref_of(func, "map function")
    if chunksize is not None and chunksize < 1:
        raise ValueError("chunksize must be >= 1")
    if not items:
        return []
    hub = current_hub()
    count = hub.runtime.workers if hub is not None else (workers or cpu_count())
    size = chunksize or max(1, -(-len(items) // (count * 4)))
    slices = [items[start:start + size] for start in range(0, len(items), size)]
    job = _MapJob([dumps((ref, part)) for part in slices])
    if hub is not None:
        if threading.get_ident() == hub.runtime.supervisor_ident:
            raise RuntimeError("parallio.map() cannot wait on the main thread's loop while "
                               "it serves: use submit_work() with a callback instead")
        maps = hub.service(_MapMain)
        maps.add(job)
        return _collect(job, maps, hub, timeout)
    runtime = Runtime([], workers=min(count, len(slices)), parallel=parallel, io=io,
                      extras={"refs": [ref], "private": True})
    maps = hub_of(runtime).service(_MapMain)
    maps.add(job)
    runtime.start()
    try:
        return _collect(job, maps, hub_of(runtime), timeout)
    finally:
        runtime.stop()


def _collect(job: _MapJob, maps: _MapMain, hub: MainHub, timeout: float | None) -> builtins.list:
    try:
        finished = job.done.wait(timeout)
    except BaseException:  # KeyboardInterrupt: the workers need not go on
        hub.call_soon(lambda: maps.cancel(job, WorkerLost("cancelled")))
        raise
    if not finished:
        hub.call_soon(lambda: maps.cancel(job, TimeoutError()))
        raise TimeoutError(f"parallio.map() did not finish within {timeout:g} s")
    if job.error is not None:
        raise job.error
    results: builtins.list = []
    for data in job.results:
        results.extend(pickle.loads(data))
    return results


def _setup_main(hub: MainHub) -> None:
    hub.install(_WorkMain(hub))
    hub.install(_MapMain(hub))


on_main_setup(_setup_main)
on_worker_setup(lambda hub: hub.install(_WorkWorker(hub)))
on_pending(_pending_refs)
