"""Timers in every host: ticks, .data/.count/.duration, skipping, load."""

from __future__ import annotations

import datetime
import socket
import threading
import time

import pytest

import parallio

from . import _funcs
from ._funcs import RESULTS

pytestmark = pytest.mark.timeout(20)


def _stop_after_ticks(timer: parallio.Timer, count: int) -> threading.Thread:
    """Stop ``timer`` once it ticked ``count`` times (or after 10 s): counts,
    not durations, so a loaded machine does not change the outcome."""
    def stop() -> None:
        timer.wait(count, timeout=10)
        timer.stop()

    stopper = threading.Thread(target=stop)
    stopper.start()
    return stopper


def test_a_periodic_timer_ticks_until_stopped(host_io):
    host, io = host_io
    clock = parallio.timer(0.0, 0.02, _funcs.tick_value, ("clock",)).start()
    first = None

    def watch() -> None:
        nonlocal first
        if clock.wait(2, timeout=10):
            first = clock.data
        clock.wait(5, timeout=10)
        clock.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    parallio.run(workers=2, parallel=host, io=io)  # returns once the timer stopped
    watcher.join()
    assert time.monotonic() - started < 15
    assert not clock.active
    assert clock.count >= 5
    assert clock.exception is None
    tag, worker, ticked_at = clock.data
    assert (tag, worker) == ("clock", (clock.timer_id - 1) % 2 + 1)  # timer n: worker n % 2
    assert first is not None and ticked_at > first[2]  # .data is the latest tick
    assert 0 <= clock.duration < 1


def test_a_one_shot_timer_ends_run_by_itself(host):
    once = parallio.timer(datetime.timedelta(milliseconds=50), 0, _funcs.tick_value, ("once",))
    once.start()
    parallio.run(workers=1, parallel=host, io="epoll")
    assert once.count == 1 and once.data[0] == "once" and not once.active


def test_timers_spread_over_workers(host):
    timers = [parallio.timer(0.0, 0, _funcs.tick_value, (str(n),)).start() for n in range(4)]
    parallio.run(workers=2, parallel=host, io="epoll")
    assert [timer.data[1] for timer in timers] == [
        (timer.timer_id - 1) % 2 + 1 for timer in timers]


def test_a_tick_longer_than_the_period_skips_ticks(host):
    slow = parallio.timer(0.0, 0.05, _funcs.tick_slow, (0.12,)).start()
    stopper = _stop_after_ticks(slow, 3)
    started = time.monotonic()
    parallio.run(workers=1, parallel=host, io="epoll")
    stopper.join()
    # Never a burst of late ticks: a tick that overran its period makes the
    # ticks due meanwhile skipped (at least 2 here), and the next one waits
    # for its own time.
    assert slow.count >= 3
    assert slow.skipped >= 2 * (slow.count - 1)
    assert slow.count <= (time.monotonic() - started) / 0.12 + 1
    assert slow.duration >= 0.1


def test_a_failing_tick_is_kept_and_the_timer_goes_on(host):
    failing = parallio.timer(0.0, 0.02, _funcs.tick_fail).start()
    stopper = _stop_after_ticks(failing, 2)
    parallio.run(workers=1, parallel=host, io="epoll")  # a tick's error is not fatal
    stopper.join()
    assert failing.count >= 2
    assert isinstance(failing.exception, RuntimeError)
    assert "in tick_fail" in str(failing.exception.__cause__)


def test_timers_tick_while_their_worker_serves_connections(host):
    """Under load: one worker echoes as fast as a client sends while its
    timer ticks every 20 ms; the ticks keep coming."""
    endpoint = parallio.server("127.0.0.1", 0)
    parallio.register(endpoint, _funcs.Echo)
    clock = parallio.timer(0.0, 0.02, _funcs.tick_value, ("loaded",)).start()
    runtime = parallio.start(workers=1, parallel=host, io="epoll")
    try:
        assert clock.wait(1, timeout=10)
        start_count, start_skipped = clock.count, clock.skipped
        started = time.monotonic()
        echoed = 0
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
            payload = b"x" * 4096
            while time.monotonic() - started < 1.0:
                sock.sendall(payload)
                received = 0
                while received < len(payload):
                    received += len(sock.recv(65536))
                echoed += received
        elapsed = time.monotonic() - started
        ticks = clock.count - start_count
        skipped = clock.skipped - start_skipped
    finally:
        clock.stop()
        runtime.stop()
    assert echoed > 20 * 4096
    # Every tick due in that second either ran or, when the worker was busy
    # past its time, was counted as skipped: none is lost or piled up.
    assert ticks >= 5
    assert ticks + skipped >= 0.8 * elapsed / 0.02 - 2, (ticks, skipped, elapsed)


def test_timer_rules():
    clock = parallio.timer(1, 1, _funcs.tick_value, ("x",))
    assert not clock.active and "stopped" in repr(clock)
    clock.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        clock.start()
    with pytest.raises(TypeError, match="top level of a module"):
        parallio.timer(0, 1, lambda: None)
    with pytest.raises(ValueError, match="period"):
        parallio.timer(0, -1, _funcs.tick_value, ("x",))
    with pytest.raises(TypeError, match="seconds or a datetime.timedelta"):
        parallio.timer("soon", 1, _funcs.tick_value, ("x",))


def test_timers_belong_to_the_main_thread(host):
    parallio.submit_work(_funcs.try_timer_in_worker)
    parallio.run(workers=1, parallel=host, io="epoll")
    [(tag, message)] = RESULTS
    assert tag == "refused" and "call_from_main_thread" in message
