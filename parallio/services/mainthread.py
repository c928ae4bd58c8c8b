"""Calling the main thread from a worker: PyParallel's
``call_from_main_thread`` and ``call_from_main_thread_and_wait``.

The main thread is the one that supervises the workers: the thread that
called :func:`parallio.run`, or the supervisor thread of
:func:`parallio.start`. Main-thread calls run there one at a time, in the
order they arrive, so a function called this way may change main-thread
state (module globals, the objects behind :func:`parallio.protect`) without
locks -- the way workers of every host reach data they may not change
themselves.

A worker sends the function by import path and its arguments pickled, in
every host; what comes back (a result, an exception) is a copy.
"""

from __future__ import annotations

import functools
import pickle
from typing import Any, Callable, TypeVar

from ._hub import (MainHub, MainThreadGone, WorkerHub, dumps, exc_payload, on_main_setup,
                   on_worker_setup, ref_of, resolve, result_payload, worker_hub)

__all__ = ["call_from_main_thread", "call_from_main_thread_and_wait", "MainThreadGone",
           "DEFAULT_TIMEOUT"]

#: Seconds a worker waits in :func:`call_from_main_thread_and_wait` unless
#: told otherwise.
DEFAULT_TIMEOUT = 30.0

F = TypeVar("F", bound=Callable[..., Any])


class _Omitted:
    def __repr__(self) -> str:
        return "<omitted>"


_OMITTED: Any = _Omitted()


def _arguments(args: Any, kwds: dict[str, Any] | None) -> tuple[tuple, dict[str, Any]]:
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple (or list) of arguments, not "
                        f"{type(args).__name__}: write (value,) for one argument")
    if kwds is not None and not isinstance(kwds, dict):
        raise TypeError(f"kwds must be a dict or None, not {type(kwds).__name__}")
    return tuple(args), dict(kwds or {})


def call_from_main_thread(func: Callable[..., Any], args: Any = _OMITTED,
                          kwds: dict[str, Any] | None = None) -> Any:
    """Run ``func(*args, **kwds)`` on the main thread, without waiting.

    From a worker the call is queued to the main thread and this returns
    None at once; an exception ``func`` raises there is logged and re-raised
    by :func:`parallio.run` when it returns. Outside a worker ``func`` runs
    now.

    Also a decorator: ``call_from_main_thread(func)`` with no ``args`` and
    no ``kwds`` returns a function that makes such a call each time it is
    called. To call a function of no arguments, pass ``args=()``.

    Args:
      func: a function defined at the top level of a module (or of the
        main script), found by the main thread through its import path.
      args: its positional arguments, a tuple.
      kwds: its keyword arguments.

    Raises:
      TypeError: ``func`` cannot be named by import path, or an argument
        cannot be pickled.
    """
    if args is _OMITTED and kwds is None:
        return _decorate(func, wait=False, timeout=DEFAULT_TIMEOUT)
    args, kwds = _arguments(args, kwds)
    hub = worker_hub()
    if hub is None:
        func(*args, **kwds)
        return None
    payload = dumps((ref_of(func), args, kwds))
    _counters(hub).main_calls += 1
    hub.send(("svc_call", None, payload))
    return None


def call_from_main_thread_and_wait(func: Callable[..., Any], args: Any = _OMITTED,
                                   kwds: dict[str, Any] | None = None, *,
                                   timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run ``func(*args, **kwds)`` on the main thread and return its result,
    or raise the exception it raised (with the main thread's traceback as
    its ``__cause__``).

    In a worker this blocks the worker -- its connections, work items and
    timers wait -- until the main thread answers: keep such calls short and
    rare on hot paths. Outside a worker ``func`` simply runs now.

    Also a decorator, as :func:`call_from_main_thread`.

    Args:
      func: a function defined at the top level of a module (or of the
        main script).
      args: its positional arguments, a tuple.
      kwds: its keyword arguments.
      timeout: seconds to wait for the main thread.

    Raises:
      TimeoutError: the main thread did not answer within ``timeout``
        (it is busy, or blocked); a late answer is dropped.
      MainThreadGone: the main thread stopped, or died, first.
      TypeError: ``func`` cannot be named by import path, or an argument
        or the result cannot be pickled.
    """
    if args is _OMITTED and kwds is None:
        return _decorate(func, wait=True, timeout=timeout)
    args, kwds = _arguments(args, kwds)
    hub = worker_hub()
    if hub is None:
        return func(*args, **kwds)
    payload = dumps((ref_of(func), args, kwds))
    _counters(hub).main_calls += 1
    return hub.call_main(payload, timeout)


def _decorate(func: F, wait: bool, timeout: float) -> F:
    if not callable(func):
        raise TypeError(f"call_from_main_thread needs a function, not {type(func).__name__}")

    @functools.wraps(func)
    def in_main_thread(*args: Any, **kwds: Any) -> Any:
        if wait:
            return call_from_main_thread_and_wait(func, args, kwds, timeout=timeout)
        return call_from_main_thread(func, args, kwds)

    return in_main_thread  # type: ignore[return-value]


# -- the main side -----------------------------------------------------------------

def _setup_main(hub: MainHub) -> None:
    def on_call(seq_id: int, call_id: Any, payload: bytes) -> None:
        what = "a main-thread call"
        try:
            ref, args, kwds = pickle.loads(payload)
            what = f"the main-thread call {ref.path} from worker {seq_id}"
            result = resolve(ref.path)(*args, **kwds)
        except Exception as exc:
            if call_id is None:
                hub.unhandled(exc, f"{what} failed")
            else:
                hub.reply(seq_id, (call_id, False, exc_payload(exc)))
            return
        if call_id is not None:
            ok, value = result_payload(result)
            hub.reply(seq_id, (call_id, ok, value))

    hub.runtime.add_message_handler("svc_call", on_call)


class _MainThreadCounters:
    """What one worker asked of the main thread."""

    def __init__(self) -> None:
        self.main_calls = 0

    def stats(self) -> dict[str, int]:
        return {"main_calls": self.main_calls}


def _counters(hub: WorkerHub) -> _MainThreadCounters:
    return hub.service(_MainThreadCounters)


def _setup_worker(hub: WorkerHub) -> None:
    hub.worker.stats_providers.append(hub.install(_MainThreadCounters()).stats)


on_main_setup(_setup_main)
on_worker_setup(_setup_worker)
