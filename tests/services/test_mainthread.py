"""call_from_main_thread and call_from_main_thread_and_wait in every host."""

from __future__ import annotations

import os
import time

import pytest

import parallio
from parallio.services import _hub

from . import _funcs
from ._funcs import RESULTS

pytestmark = pytest.mark.timeout(20)


def test_wait_returns_the_main_threads_result(host_io):
    host, io = host_io
    parallio.submit_work(_funcs.call_and_record)
    parallio.run(workers=1, parallel=host, io=io)
    [(tag, result, (in_worker, main_pid, main_thread), called_from)] = RESULTS
    assert (tag, result, in_worker, main_pid) == ("waited", 5, False, os.getpid())
    assert (called_from[1], called_from[2]) != (main_pid, main_thread)  # ran elsewhere


def test_the_main_threads_exception_crosses_to_the_worker(host):
    parallio.submit_work(_funcs.call_failing_and_record)
    parallio.run(workers=1, parallel=host, io="epoll")
    [(tag, type_name, cause)] = RESULTS
    assert (tag, type_name) == ("caught", "KeyError")
    assert "in main_fail" in cause  # the main thread's traceback, as the cause


def test_decorators_call_the_main_thread(host):
    parallio.submit_work(_funcs.call_decorated_and_record)
    parallio.run(workers=1, parallel=host, io="epoll")
    assert ("note", 7, False) in RESULTS
    [(_tag, decorated, _where)] = [r for r in RESULTS if r[0] == "decorated"]
    assert decorated == (42, False)


def test_decorated_functions_run_directly_on_the_main_thread():
    assert _funcs.decorated_wait(3, b=2) == (6, False)
    assert parallio.call_from_main_thread_and_wait(_funcs.main_add, (1, 2)) == 3
    assert parallio.call_from_main_thread(_funcs.store, ("direct",)) is None
    assert RESULTS == ["direct"]


def test_a_timed_out_call_raises_and_its_late_answer_is_dropped(host):
    parallio.submit_work(_funcs.call_with_timeout_and_record)
    parallio.run(workers=1, parallel=host, io="epoll")
    assert RESULTS == [("timeout", 42)]


def test_a_failing_fire_and_forget_call_is_reraised_by_run(host):
    parallio.submit_work(_funcs.fire_failing_main_call)
    with pytest.raises(KeyError, match="raised on the main thread"):
        parallio.run(workers=1, parallel=host, io="epoll")


def test_a_worker_dying_with_a_main_thread_call_pending(host):
    """The worker queues a slow main-thread call and dies before it ran:
    the main thread runs it, nothing hangs, the lost item is reported."""
    parallio.submit_work(_funcs.note_then_die)
    started = time.monotonic()
    with pytest.raises(parallio.WorkerLost):
        parallio.run(workers=1, parallel=host, io="epoll")
    assert time.monotonic() - started < 15
    assert RESULTS == [("slow note", "before death")]


def test_a_worker_killed_while_it_waits_for_the_main_thread():
    """The worker is killed while the main thread runs its call: the answer
    goes nowhere (never to its successor, which gets its own), no hang."""
    parallio.submit_work(_funcs.wait_for_my_death)
    started = time.monotonic()
    with pytest.raises(parallio.WorkerLost):
        parallio.run(workers=1, parallel="processes", io="epoll")
    assert time.monotonic() - started < 15
    [(tag, result, _info, _where)] = RESULTS
    assert (tag, result) == ("waited", 5)


def test_arguments_must_be_a_tuple():
    with pytest.raises(TypeError, match="write \\(value,\\)"):
        parallio.call_from_main_thread(_funcs.store, "value")
    with pytest.raises(TypeError, match="kwds"):
        parallio.call_from_main_thread_and_wait(_funcs.store, (), ["not a dict"])


class _FakeWorker:
    """Just what a WorkerHub needs, to test its wait without a runtime."""

    def __init__(self, reply_fd: int) -> None:
        self.seq_id = 1
        self.busy_checks: list = []
        self.stats_providers: list = []
        self.listeners: list = []
        self.state: dict = {}
        self.sent: list = []
        self.spec = type("Spec", (), {"extras": {}, "reply_fd": reply_fd,
                                      "endpoints": [], "host": "processes",
                                      "main_module": None})()

    def add_control_handler(self, kind: str, handler: object) -> None:
        pass

    def send_to_main(self, message: tuple) -> None:
        self.sent.append(message)

    def call_later(self, delay: float, callback: object, *args: object) -> None:
        pass


def test_a_worker_whose_main_thread_is_gone_gets_an_error():
    read_fd, write_fd = os.pipe()
    try:
        hub = _hub.WorkerHub(_FakeWorker(read_fd))
        os.close(write_fd)  # the main thread's end: gone
        with pytest.raises(parallio.MainThreadGone):
            hub.call_main(_hub.dumps((None, (), {})), timeout=5)
        assert hub.worker.sent[0][0] == "svc_call"
    finally:
        os.close(read_fd)
