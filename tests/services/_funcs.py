"""Functions the services tests hand to workers: named by import path, so
every host can find them. Workers report back with :func:`record`, which
lands in :data:`RESULTS` on the main thread."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import parallio

#: What workers recorded, on the main thread.
RESULTS: list = []
_changed = threading.Condition()

#: A protected dict made at a module's top level: the main thread's object
#: in every host (other hosts' workers reach it by main-thread calls).
HITS = parallio.dict()
ITEMS = parallio.list()


def reset() -> None:
    with _changed:
        RESULTS.clear()
    HITS.clear()
    ITEMS.clear()


def store(value: Any) -> None:
    """Main thread: keep what a worker sent."""
    with _changed:
        RESULTS.append(value)
        _changed.notify_all()


def wait_results(count: int, timeout: float = 10.0) -> list:
    """Main thread, from a thread other than the supervisor's."""
    deadline = time.monotonic() + timeout
    with _changed:
        while len(RESULTS) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _changed.wait(remaining)
        return list(RESULTS)


def record(value: Any) -> None:
    """Worker: send ``value`` to the main thread's RESULTS."""
    parallio.call_from_main_thread(store, (value,))


def where() -> tuple[int, int, int]:
    return (parallio.thread_seq_id(), os.getpid(), threading.get_ident())


# -- work ---------------------------------------------------------------------------------

def square(x: int) -> int:
    return x * x


def square_and_where(x: int) -> tuple:
    return (x * x, where())


def record_result_and_where(result: Any) -> None:
    record((result, where()))


def fail(message: str) -> None:
    raise ValueError(message)


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def record_error(exc: BaseException) -> None:
    record(("errback", type(exc).__name__, str(exc), where()))


def raising_callback(result: Any) -> None:
    raise KeyError("from the callback")


def die() -> None:
    raise SystemExit(3)


def die_on(x: int) -> int:
    if x == 5:
        raise SystemExit(3)
    return x


def spawn_nested(count: int) -> None:
    """Submits closures from a worker: they run in this worker, after this
    function returns."""
    spawner = where()
    for index in range(count):
        parallio.submit_work(lambda index=index: index * 10,
                             callback=lambda result: record(("nested", result, where(), spawner)))
    record(("spawned", spawner))


def map_inside(count: int) -> list:
    return parallio.map(square, range(count))


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


# -- main-thread calls ---------------------------------------------------------------------

def main_add(a: int, b: int) -> int:
    return a + b


def main_where() -> tuple:
    return (parallio.is_parallel_thread(), os.getpid(), threading.get_ident())


def main_fail() -> None:
    raise KeyError("raised on the main thread")


def main_sleep(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


@parallio.call_from_main_thread_and_wait
def decorated_wait(a: int, b: int = 1) -> tuple:
    return (a * b, parallio.is_parallel_thread())


@parallio.call_from_main_thread
def decorated_note(value: Any) -> None:
    store(("note", value, parallio.is_parallel_thread()))


def call_and_record() -> None:
    result = parallio.call_from_main_thread_and_wait(main_add, (2, 3))
    info = parallio.call_from_main_thread_and_wait(main_where, ())
    record(("waited", result, info, where()))


def call_failing_and_record() -> None:
    try:
        parallio.call_from_main_thread_and_wait(main_fail, ())
    except KeyError as exc:
        record(("caught", type(exc).__name__, str(exc.__cause__)))


def call_decorated_and_record() -> None:
    decorated_note(7)
    record(("decorated", decorated_wait(6, b=7), where()))


def call_with_timeout_and_record() -> None:
    try:
        parallio.call_from_main_thread_and_wait(main_sleep, (0.6, "late"), timeout=0.1)
    except TimeoutError:
        outcome = "timeout"
    else:
        outcome = "answered"
    # The late answer of the first call must not be taken for this one's.
    record((outcome, parallio.call_from_main_thread_and_wait(main_add, (20, 22))))


def fire_failing_main_call() -> None:
    parallio.call_from_main_thread(main_fail, ())


def main_kill(pid: int) -> str:
    """Main thread: kill the (processes-host) worker waiting for this call,
    queue a check for its successor, and answer the dead worker anyway."""
    os.kill(pid, signal.SIGKILL)
    parallio.submit_work(call_and_record)
    time.sleep(0.2)
    return "stale answer"


def wait_for_my_death() -> None:
    parallio.call_from_main_thread_and_wait(main_kill, (os.getpid(),))


def main_slow_note(value: Any) -> None:
    time.sleep(0.3)
    store(("slow note", value))


def note_then_die() -> None:
    parallio.call_from_main_thread(main_slow_note, ("before death",))
    raise SystemExit(3)


# -- timers --------------------------------------------------------------------------------

def tick_value(tag: str) -> tuple:
    return (tag, parallio.thread_seq_id(), time.monotonic())


def tick_slow(seconds: float) -> float:
    time.sleep(seconds)
    return time.monotonic()


def tick_fail() -> None:
    raise RuntimeError("tick failed")


def try_timer_in_worker() -> None:
    try:
        parallio.timer(0, 0, tick_value, ("x",))
    except RuntimeError as exc:
        record(("refused", str(exc)))


# -- shared data ---------------------------------------------------------------------------

def read_shared(name: str) -> None:
    value = parallio.shared(name)
    record((name, type(value).__name__, _plain(value), where()))


def _plain(value: Any) -> Any:
    if isinstance(value, parallio.SharedBuffer):
        return (value.tobytes(), value.format, value.tolist()[:3])
    if hasattr(value, "copy"):
        return value.copy()
    return value


def read_out_of_band(name: str) -> None:
    data = parallio.shared(name)["data"]
    record(("out of band", type(data).__name__, data.nbytes, bytes(data[:8])))


def write_shared(name: str, how: str) -> None:
    value = parallio.shared(name)
    try:
        if how == "setitem":
            value[0 if isinstance(value, parallio.SharedBuffer) else "new"] = 1
        elif how == "nested_append":
            value["list"].append(4)
        elif how == "append":
            value.append(4)
        elif how == "setattr":
            value.name = "changed"
        elif how == "view":
            value.view[0] = 1
        elif how == "update":
            value.update({"x": 1})
    except parallio.AssignmentError as exc:
        record(("AssignmentError", str(exc)))
    except TypeError as exc:
        record(("TypeError", str(exc)))
    else:
        record(("written", how))


class Config:
    def __init__(self) -> None:
        self.name = "config"
        self.sizes = [1, 2, 3]


def bump(counts: Any, key: str) -> int:
    counts[key] = counts.get(key, 0) + 1
    return counts[key]


def use_protected(index: int) -> None:
    HITS[f"worker-{index}"] = parallio.thread_seq_id()
    HITS.atomic(bump, "total")
    ITEMS.append(index)
    # Two snapshots in one atomic operation: taken separately, another
    # worker's write could land between them.
    keys, items = HITS.atomic(keys_and_items)
    record(("protected", len(keys) == len(items) > 0, "total" in HITS, type(HITS).__name__))


def keys_and_items(mapping: dict) -> tuple[list, list]:
    return list(mapping.keys()), list(mapping.items())


def protected_read_only_values() -> None:
    HITS["list"] = [1, 2]
    value = HITS["list"]
    try:
        value.append(3)
    except parallio.AssignmentError:
        record(("read-only value", list(value), sorted(HITS)))


def make_protected_in_worker() -> None:
    try:
        parallio.dict()
    except parallio.ProtectionError as exc:
        record(("ProtectionError", str(exc)))


def use_shared_protect(name: str) -> None:
    obj = parallio.shared(name)
    obj.name = f"set by worker {parallio.thread_seq_id()}"
    record(("object", obj.name, parallio.protected(obj), list(obj.sizes)))


# -- introspection ---------------------------------------------------------------------------

def local_introspection() -> None:
    record(("introspection", parallio.socket_stats(), parallio.context_stats(),
            parallio.active_contexts(), parallio.gmtime(), parallio.rdtsc()))


class Metrics:
    """A protocol answering each connection with every worker's counters."""

    def connection_made(self, transport: Any) -> bytes:
        transport.close()
        return parallio.prometheus_text().encode()


class Echo:
    def data_received(self, transport: Any, data: bytes) -> bytes:
        return data
