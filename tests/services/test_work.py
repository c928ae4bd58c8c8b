"""submit_work and parallio.map in every host."""

from __future__ import annotations

import time

import pytest

import parallio
from parallio import _context
from parallio.services._hub import RemoteTraceback

from . import _funcs
from ._funcs import RESULTS

pytestmark = pytest.mark.timeout(20)


def test_callback_runs_in_the_worker_that_ran_the_item(host_io):
    host, io = host_io
    for value in range(6):
        parallio.submit_work(_funcs.square_and_where, (value,),
                             callback=_funcs.record_result_and_where)
    started = time.monotonic()
    parallio.run(workers=2, parallel=host, io=io)
    assert time.monotonic() - started < 15
    assert sorted(result[0] for result, _where in RESULTS) == [v * v for v in range(6)]
    for (_square, ran_in), called_in in RESULTS:
        assert ran_in == called_in
    # Items queued before run() are handed out round-robin.
    assert {called_in[0] for _result, called_in in RESULTS} == {1, 2}


def test_errback_gets_the_exception_in_the_same_worker(host):
    parallio.submit_work(_funcs.fail, ("bad input",), errback=_funcs.record_error)
    parallio.run(workers=1, parallel=host, io="epoll")  # handled: run() does not raise
    [(tag, type_name, message, ran_in)] = RESULTS
    assert (tag, type_name, message) == ("errback", "ValueError", "bad input")
    assert ran_in[0] == 1


def test_unhandled_exception_is_reraised_by_run_with_the_worker_traceback(host_io):
    host, io = host_io
    parallio.submit_work(_funcs.fail, ("nobody catches this",))
    with pytest.raises(ValueError, match="nobody catches this") as caught:
        parallio.run(workers=1, parallel=host, io=io)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in str(cause)


def test_exception_in_callback_is_unhandled(host):
    parallio.submit_work(_funcs.square, (3,), callback=_funcs.raising_callback)
    parallio.submit_work(_funcs.fail, ("second",))
    with pytest.raises(KeyError, match="from the callback") as caught:
        parallio.run(workers=1, parallel=host, io="epoll")
    assert "1 more unhandled error" in "".join(getattr(caught.value, "__notes__", []))


def test_submit_work_in_a_worker_runs_there_after_the_callback_returns(host):
    parallio.submit_work(_funcs.spawn_nested, (3,))
    parallio.run(workers=2, parallel=host, io="epoll")
    assert RESULTS[0][0] == "spawned"
    spawner = RESULTS[0][1]
    nested = RESULTS[1:]
    assert sorted(result for _tag, result, _ran_in, _spawner in nested) == [0, 10, 20]
    for _tag, _result, ran_in, spawned_by in nested:
        assert ran_in == spawner == spawned_by


def test_a_worker_dying_loses_its_item_with_an_error_not_a_hang(host):
    parallio.submit_work(_funcs.die)
    parallio.submit_work(_funcs.square_and_where, (4,), callback=_funcs.record_result_and_where)
    started = time.monotonic()
    with pytest.raises(parallio.WorkerLost, match="before work item"):
        parallio.run(workers=2, parallel=host, io="epoll")
    assert time.monotonic() - started < 15
    assert [result[0] for result, _where in RESULTS] == [16]


def test_main_thread_refuses_what_workers_cannot_import():
    def nested():
        return 1

    with pytest.raises(TypeError, match="top level of a module"):
        parallio.submit_work(lambda: 1)
    with pytest.raises(TypeError, match="top level of a module"):
        parallio.submit_work(nested)
    with pytest.raises(TypeError, match="top level of a module"):
        parallio.submit_work(_funcs.square, (1,), callback=RESULTS.append)
    with pytest.raises(TypeError, match="args must be a tuple"):
        parallio.submit_work(_funcs.square, 3)


def test_run_with_nothing_to_do_says_so():
    with pytest.raises(RuntimeError, match="submit work or start a timer"):
        parallio.run(workers=1, parallel="threads")


def test_map_starts_workers_of_its_own(host_io):
    host, io = host_io
    assert parallio.map(_funcs.square, range(50), workers=2, parallel=host, io=io) == [
        value * value for value in range(50)]
    assert parallio.map(_funcs.square, [], workers=2, parallel=host) == []


def test_map_reraises_the_first_error(host):
    with pytest.raises(ValueError, match="item 3 is bad") as caught:
        parallio.map(_funcs.fail_on, range(10), workers=2, parallel=host, chunksize=1)
    assert isinstance(caught.value.__cause__, RemoteTraceback)


def test_map_of_a_dying_worker_raises_worker_lost(host):
    started = time.monotonic()
    with pytest.raises(parallio.WorkerLost):
        parallio.map(_funcs.die_on, range(10), workers=2, parallel=host, chunksize=2)
    assert time.monotonic() - started < 15


def test_map_uses_running_workers(host):
    endpoint = parallio.server("127.0.0.1", 0)
    parallio.register(endpoint, _funcs.Echo)
    runtime = parallio.start(workers=2, parallel=host, io="epoll")
    try:
        assert parallio.map(_funcs.square, range(20), chunksize=3) == [v * v for v in range(20)]
        assert parallio.map(_funcs.square_and_where, range(8), chunksize=1)[0][0] == 0
    finally:
        runtime.stop()


def test_map_in_a_worker_computes_in_place(host):
    parallio.submit_work(_funcs.map_inside, (5,), callback=_funcs.record)
    parallio.run(workers=1, parallel=host, io="epoll")
    assert RESULTS == [[0, 1, 4, 9, 16]]


def test_map_refuses_to_run_while_a_worker_loads_the_main_script():
    _context.local.importing_main = True
    try:
        with pytest.raises(RuntimeError, match="__name__ == '__main__'"):
            parallio.map(_funcs.square, [1])
        assert parallio.submit_work(_funcs.square, (1,)) is None  # ignored there
    finally:
        _context.local.importing_main = False
