"""Timers: PyParallel's ``timer(duetime, period, func, args, kwds)``.

A :class:`Timer` is a main-thread object; its ticks run in a worker -- timer
number *n* in worker ``(n - 1) % workers + 1``, so timers spread over the
workers -- and each tick's result comes back to the main thread as
:attr:`Timer.data`, a copy (pickled in every host). A worker that dies gets
its timers back when it is restarted, on their original schedule.

Ticks never overlap: each runs on its worker's loop. A tick that overruns
its period makes the ticks due meanwhile *skipped* (counted in
:attr:`Timer.skipped`), not run late in a burst; the next tick runs at the
next multiple of the period after the long one ends.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import pickle
import threading
import time
from typing import Any, Callable

from ..worker import current_worker
from ._hub import (MainHub, WorkerHub, current_hub, dumps, exc_from_payload, exc_payload,
                   on_main_setup, on_pending, on_worker_setup, ref_of, resolve,
                   result_payload)

__all__ = ["Timer", "timer"]

log = logging.getLogger("parallio")

_timer_ids = itertools.count(1)
_lock = threading.Lock()
#: Started timers, for the runtime that runs them (or the next to start).
_started: dict[int, "Timer"] = {}


def _seconds(value: float | datetime.timedelta, name: str) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be seconds or a datetime.timedelta, not {type(value).__name__}")


class Timer:
    """A function run in a worker at ``duetime`` and then every ``period``.

    Made by :func:`timer`; nothing runs until :meth:`start`. While a timer
    is started :func:`parallio.run` keeps going. All methods belong to the
    main thread.

    Attributes:
      data: a copy of the last tick's result (None before the first).
      count: ticks run so far.
      duration: seconds the last tick took.
      skipped: ticks skipped because the one before was still running.
      exception: the exception the last tick raised, or None. It is also
        logged; a failing tick does not stop the timer.
    """

    def __init__(self, duetime: float | datetime.timedelta | datetime.datetime,
                 period: float | datetime.timedelta, func: Callable[..., Any],
                 args: tuple = (), kwds: dict[str, Any] | None = None) -> None:
        if isinstance(duetime, datetime.datetime):
            now = datetime.datetime.now(duetime.tzinfo)
            self._delay = max(0.0, (duetime - now).total_seconds())
        else:
            self._delay = max(0.0, _seconds(duetime, "duetime"))
        self.period = _seconds(period, "period")
        if self.period < 0:
            raise ValueError("period must be >= 0 (0 runs the timer once)")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple, not {type(args).__name__}")
        self.timer_id = next(_timer_ids)
        self._ref = ref_of(func, "timer function")
        self._payload = dumps((self._ref, tuple(args), dict(kwds or {})))
        self.data: Any = None
        self.count = 0
        self.duration = 0.0
        self.skipped = 0
        self.exception: BaseException | None = None
        self._origin: float | None = None  # monotonic time of the first tick
        self._generation = 0  # bumped by stop(): ticks of an older start are ignored
        self._active = False
        self._shut = False
        self._changed = threading.Condition(_lock)

    def __repr__(self) -> str:
        state = "shut down" if self._shut else "started" if self._active else "stopped"
        return (f"<parallio.Timer {self._ref.path} every {self.period:g} s, {state}, "
                f"{self.count} tick(s)>")

    @property
    def active(self) -> bool:
        """True from :meth:`start` until :meth:`stop`, or a one-shot's tick."""
        return self._active

    def start(self) -> "Timer":
        """Start ticking: now if workers run, else once :func:`parallio.run`
        starts them. Starting a started timer does nothing.

        Raises:
          RuntimeError: the timer was shut down, or this is not the main
            thread.
        """
        _check_main("start")
        with _lock:
            if self._shut:
                raise RuntimeError("this timer was shut down: make a new one")
            if self._active:
                return self
            self._active = True
            self._generation += 1
            self._origin = time.monotonic() + self._delay
            _started[self.timer_id] = self
        hub = current_hub()
        if hub is not None:
            timers = hub.service(_TimersMain)
            hub.call_soon(lambda: timers.dispatch(self))
        return self

    def stop(self) -> None:
        """Stop ticking (a tick running now finishes); :meth:`start` resumes
        on a fresh schedule."""
        _check_main("stop")
        with _lock:
            if not self._active:
                return
            self._deactivate()
        hub = current_hub()
        if hub is not None:
            timers = hub.service(_TimersMain)
            hub.call_soon(lambda: timers.cancel(self))

    def shutdown(self) -> None:
        """Stop for good: the timer cannot be started again."""
        self.stop()
        with _lock:
            self._shut = True

    def wait(self, count: int, timeout: float | None = None) -> bool:
        """Wait until :attr:`count` reaches ``count`` or the timer stops;
        True if it reached it. For a thread other than the one serving."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self.count < count and self._active:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self.count >= count

    def _deactivate(self) -> None:
        self._active = False
        self._generation += 1
        _started.pop(self.timer_id, None)
        self._changed.notify_all()

    def _next_due(self, now: float) -> float:
        """The first tick of the schedule that is not in the past."""
        assert self._origin is not None
        if now <= self._origin or not self.period:
            return self._origin
        missed = int((now - self._origin) // self.period) + 1
        return self._origin + missed * self.period


def timer(duetime: float | datetime.timedelta | datetime.datetime,
          period: float | datetime.timedelta, func: Callable[..., Any], args: tuple = (),
          kwds: dict[str, Any] | None = None) -> Timer:
    """A :class:`Timer` calling ``func(*args, **kwds)`` in a worker first at
    ``duetime`` then every ``period``; call :meth:`Timer.start` to start it.

    Args:
      duetime: seconds from now (a number or a ``timedelta``), or a
        ``datetime``.
      period: seconds between ticks (a number or a ``timedelta``); 0 runs
        the timer once. PyParallel took milliseconds: parallio takes
        seconds, as the rest of Python does.
      func: a function at the top level of a module or of the main script.
      args: its positional arguments, pickled.
      kwds: its keyword arguments, pickled.

    Raises:
      TypeError: ``func`` cannot be named by import path, or an argument
        cannot be pickled.
    """
    _check_main("timer")
    return Timer(duetime, period, func, args, kwds)


def _check_main(name: str) -> None:
    if current_worker() is not None:
        raise RuntimeError(f"parallio.{name}() belongs to the main thread: create and start "
                           "timers there (from a worker, through call_from_main_thread)")


# -- the main side ---------------------------------------------------------------------

class _TimersMain:
    def __init__(self, hub: MainHub) -> None:
        self.hub = hub
        #: timer id -> (timer, worker it was sent to)
        self.running: dict[int, tuple[Timer, int]] = {}
        hub.runtime.busy_checks.append(lambda: bool(self.running) or self._any_started())
        hub.runtime.add_message_handler("svc_tick", self._tick)
        hub.on_ready(self._ready)
        hub.on_close(self._closed)

    def _any_started(self) -> bool:
        # Started before run(): not dispatched until a worker is ready.
        return not self.hub.private and bool(_started)

    def _worker_for(self, timer: Timer) -> int:
        return (timer.timer_id - 1) % self.hub.runtime.workers + 1

    def dispatch(self, timer: Timer) -> None:
        seq_id = self._worker_for(timer)
        with _lock:
            if not timer._active:
                return
            generation = timer._generation
            due = timer._next_due(time.monotonic())
        if seq_id not in self.hub.ready:
            return  # sent once it is (again)
        self.running[timer.timer_id] = (timer, seq_id)
        self.hub.send(seq_id, ("svc_timer", timer.timer_id, generation, timer._payload,
                               due, timer.period))

    def cancel(self, timer: Timer) -> None:
        entry = self.running.pop(timer.timer_id, None)
        if entry is not None:
            self.hub.send(entry[1], ("svc_timer_stop", timer.timer_id))

    def _ready(self, seq_id: int) -> None:
        if self.hub.private:
            return
        with _lock:
            timers = [timer for timer in _started.values() if self._worker_for(timer) == seq_id]
        for timer in timers:
            self.dispatch(timer)

    def _tick(self, seq_id: int, timer_id: int, generation: int, duration: float,
              skipped: int, ok: bool, value: Any, final: bool) -> None:
        entry = self.running.get(timer_id)
        if entry is None:
            return
        timer = entry[0]
        error: BaseException | None = None
        if ok:
            try:
                data = pickle.loads(value)
            except Exception as exc:
                ok, error = False, exc
        else:
            error = exc_from_payload(value)
        with _lock:
            if generation != timer._generation:
                return  # a tick of a start that was since stopped
            timer.count += 1
            timer.duration = duration
            timer.skipped += skipped
            if ok:
                timer.data = data
                timer.exception = None
            else:
                timer.exception = error
            if final:
                timer._deactivate()
                del self.running[timer_id]
            timer._changed.notify_all()
        if error is not None:
            log.error("parallio: a tick of timer %s failed in worker %d", timer._ref.path,
                      seq_id, exc_info=(type(error), error, error.__traceback__))

    def _closed(self) -> None:
        # The timers stop with their workers; start() makes them tick again.
        with _lock:
            for timer, _seq_id in self.running.values():
                timer._deactivate()
            if not self.hub.private:
                for timer in list(_started.values()):
                    timer._deactivate()
        self.running.clear()


# -- the worker side -------------------------------------------------------------------

class _TimersWorker:
    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub
        self.handles: dict[int, Any] = {}
        self.ticks = 0
        hub.worker.add_control_handler("svc_timer", self._start)
        hub.worker.add_control_handler("svc_timer_stop", self._stop)
        hub.worker.stats_providers.append(
            lambda: {"timers": len(self.handles), "timer_ticks": self.ticks})

    def _start(self, timer_id: int, generation: int, payload: bytes, due: float,
               period: float) -> None:
        self._stop(timer_id)
        ref, args, kwds = pickle.loads(payload)
        state = [ref, args, kwds, generation, due, period]
        self._schedule(timer_id, state)

    def _schedule(self, timer_id: int, state: list) -> None:
        due = state[4]
        self.handles[timer_id] = self.hub.worker.call_later(
            max(0.0, due - time.monotonic()), self._tick, timer_id, state)

    def _stop(self, timer_id: int) -> None:
        handle = self.handles.pop(timer_id, None)
        if handle is not None:
            handle.cancel()

    def _tick(self, timer_id: int, state: list) -> None:
        ref, args, kwds, generation, due, period = state
        started = time.monotonic()
        try:
            ok, value = result_payload(resolve(ref.path)(*args, **kwds))
        except Exception as exc:
            ok, value = False, exc_payload(exc)
        ended = time.monotonic()
        self.ticks += 1
        skipped = 0
        final = not period
        if not final:
            due += period
            if due <= ended:
                skipped = int((ended - due) // period) + 1
                due += skipped * period
            state[4] = due
            self._schedule(timer_id, state)
        else:
            del self.handles[timer_id]
        self.hub.send(("svc_tick", timer_id, generation, ended - started, skipped, ok, value,
                       final))


def _setup_main(hub: MainHub) -> None:
    hub.install(_TimersMain(hub))


def _pending_refs() -> list:
    with _lock:
        return [timer._ref for timer in _started.values()]


on_main_setup(_setup_main)
on_worker_setup(_TimersWorker)
on_pending(_pending_refs)
