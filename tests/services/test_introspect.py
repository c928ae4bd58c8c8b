"""Introspection in every host: counters of a worker and of all workers,
the cheap clock, the cached HTTP date, and the Prometheus rendering."""

from __future__ import annotations

import re
import socket
import time
from email.utils import parsedate_to_datetime

import pytest

import parallio
from parallio.http.response import http_date

from . import _funcs
from ._funcs import RESULTS

pytestmark = pytest.mark.timeout(20)


def test_clock_and_date():
    first = parallio.rdtsc()
    second = parallio.rdtsc()
    assert isinstance(first, int) and second >= first
    date = parallio.gmtime()
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", date)
    assert date == http_date().decode()
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 2


def test_a_worker_sees_its_own_counters(host):
    parallio.submit_work(_funcs.local_introspection)
    parallio.run(workers=1, parallel=host, io="epoll")
    [(_tag, sockets, contexts, active, date, clock)] = RESULTS
    assert sockets == {"listeners": 0, "connections": 0, "connections_total": 0,
                       "bytes_in": 0, "bytes_out": 0}
    assert contexts["work_submitted"] == 1 and contexts["work_queued"] == 1  # itself
    assert contexts["main_calls"] == 0  # counted once sent: the record() comes after
    assert active == 1  # the running work item itself
    assert date.endswith(" GMT") and isinstance(clock, int)


def test_the_main_thread_sums_every_workers_counters(host):
    endpoint = parallio.server("127.0.0.1", 0)
    parallio.register(endpoint, _funcs.Echo)
    runtime = parallio.start(workers=2, parallel=host, io="epoll")
    try:
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            sockets = parallio.socket_stats()
            assert sockets["listeners"] == 2
            assert sockets["connections"] == 1 and sockets["bytes_in"] == 4
            assert parallio.active_contexts() == 1
        contexts = parallio.context_stats()
        assert contexts["callbacks"] == 1 and contexts["callback_errors"] == 0
        per_worker = parallio.stats()
        assert [stats["worker"] for stats in per_worker] == [1, 2]
        assert all(stats["work_queued"] == 0 and stats["listeners"] == 1 for stats in per_worker)
        text = parallio.prometheus_text()
    finally:
        runtime.stop()
    assert "parallio_workers 2\n" in text
    assert re.search(r'^parallio_bytes_in_total\{worker="\d",host="' + host + r'",io="epoll"\} 4$',
                     text, re.M)
    assert "# TYPE parallio_connections gauge" in text
    assert parallio.socket_stats() == {key: 0 for key in sockets}  # nothing runs now


def test_a_route_can_serve_every_workers_metrics(host):
    endpoint = parallio.server("127.0.0.1", 0)
    parallio.register(endpoint, _funcs.Metrics)
    runtime = parallio.start(workers=2, parallel=host, io="epoll")
    try:
        # Every worker reports its counters as it starts, then every second;
        # the kernel spreads connections over the workers: ask a few times.
        texts: list[str] = []
        deadline = time.monotonic() + 10
        while len(texts) < 4 and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            text = b"".join(chunks).decode()
            if "parallio_workers 2\n" in text:
                texts.append(text)
            else:
                time.sleep(0.1)
    finally:
        runtime.stop()
    assert len(texts) == 4
    for text in texts:
        assert len(re.findall(r"^parallio_connections\{", text, re.M)) == 2


def test_prometheus_text_of_given_counters():
    text = parallio.prometheus_text([
        {"worker": 1, "host": 'we"ird', "io": "epoll", "connections": 3, "bytes_out": 10},
    ])
    assert text.endswith("\n")
    assert 'parallio_connections{worker="1",host="we\\"ird",io="epoll"} 3' in text
    assert "# TYPE parallio_bytes_out_total counter" in text
    assert parallio.PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")
