"""parallio.loop.run_on_all_cores and ``python -m parallio asyncio``: asyncio
programs in parallio workers, each on its own loop over its own engine, in
every host."""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import parallio.loop
from parallio.host import InterpretersHost

from ..conftest import ENGINES, engine_skip_reason, host_skip_reason, recv_until
from ..test_cli import ROOT

pytestmark = pytest.mark.timeout(90)

HOSTS = ["threads", "interpreters", "processes"]


@pytest.mark.parametrize("host", HOSTS)
def test_every_worker_runs_main_on_a_parallio_loop_of_its_own(host):
    if host_skip_reason(host):
        pytest.skip(host_skip_reason(host))
    results = parallio.loop.run_on_all_cores("tests.loop._programs:where_am_i", workers=2,
                                             parallel=host, io="epoll")
    assert results == [("EventLoop", "epoll", 1), ("EventLoop", "epoll", 2)]


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_serves_the_workers(engine):
    if engine_skip_reason(engine):
        pytest.skip(engine_skip_reason(engine))
    results = parallio.loop.run_on_all_cores("tests.loop._programs:where_am_i", workers=2,
                                             parallel="threads", io=engine)
    assert {name for _loop, name, _seq in results} == {engine}


def test_a_failing_worker_stops_them_all_with_its_exception():
    started = time.monotonic()
    with pytest.raises(ValueError, match="worker 2 gave up"):
        parallio.loop.run_on_all_cores("tests.loop._programs:second_worker_fails", workers=2,
                                       parallel="threads")
    # Worker 1 sleeps for a minute: it was cancelled, not waited for.
    assert time.monotonic() - started < 30


def test_main_must_be_a_coroutine_function():
    with pytest.raises(TypeError, match="coroutine function"):
        parallio.loop.run_on_all_cores("os:getcwd", workers=1)
    with pytest.raises(ImportError, match="tests.loop._programs:missing"):
        parallio.loop.run_on_all_cores("tests.loop._programs:missing", workers=1)


def test_auto_says_which_host_and_why(caplog):
    with caplog.at_level(logging.INFO, logger="parallio"):
        results = parallio.loop.run_on_all_cores("tests.loop._programs:where_am_i", workers=2)
    assert [seq for _loop, _engine, seq in results] == [1, 2]
    expected = "interpreters" if InterpretersHost.unavailable_reason() is None else None
    if expected:
        assert "interpreters" in caplog.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("host", ["threads", "processes"])
def test_the_asyncio_command_serves_on_every_worker_until_sigint(host):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "parallio", "asyncio", "tests.loop._programs:serve_echo",
         "--workers", "2", "--parallel", host],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, PARALLIO_TEST_PORT=str(port)))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],  # type: ignore[union-attr]
                     daemon=True).start()
    seen = []
    try:
        serving = set()
        deadline = time.monotonic() + 30
        while len(serving) < 2 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if line.endswith(" serving\n"):
                serving.add(line.split()[1])
        assert serving == {"1", "2"}, "".join(seen)
        for number in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"ping %d\n" % number)
                assert recv_until(sock) == b"ping %d\n" % number
    except BaseException:
        process.kill()
        raise
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0, "".join(seen)


def test_the_asyncio_command_names_a_missing_function():
    result = subprocess.run(
        [sys.executable, "-m", "parallio", "asyncio", "tests.loop._programs:missing"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    assert "tests.loop._programs:missing" in result.stderr
    assert "Traceback" not in result.stderr
