"""Exhaustion, tested on real sockets: out of file descriptors, thousands of
slow clients, clients that stop reading."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from ._http_client import Client, encode_request
from .conftest import HOSTS, host_skip_reason, engine_skip_reason, ENGINES
from .stress import cpu_seconds, rss, with_fd_limit
from .test_cli import start_server_process, stop

A = "tests._supervision_apps:"


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("engine", ENGINES)
def test_out_of_file_descriptors(host, engine):
    """More clients than descriptors: the server neither spins nor floods
    the log nor dies, and serves again once descriptors are free."""
    reason = host_skip_reason(host) or engine_skip_reason(engine)
    if reason:
        pytest.skip(reason)
    command = [sys.executable, "-m", "parallio", "serve", A + "Web", "--parallel", host,
               "--workers", "2", "--io", engine, "--port", "0"]
    process, port, _lines = start_server_process(with_fd_limit(96, command))
    hogs: list[socket.socket] = []
    waiting: list[Client] = []
    try:
        # Idle connections until accepting fails for want of descriptors.
        for _ in range(200):
            hogs.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)
        before = cpu_seconds(process.pid)
        time.sleep(3.0)
        spent = cpu_seconds(process.pid) - before
        assert spent < 0.6, f"{spent:.2f} s of CPU in 3 s while out of descriptors"
        assert process.poll() is None
        # Requests that wait in the backlog meanwhile...
        waiting = [Client(("127.0.0.1", port), timeout=15) for _ in range(5)]
        for client in waiting:
            client.send(encode_request("GET", "/who", [], b""))
        for sock in hogs:
            sock.close()
        hogs.clear()
        # ...are answered once descriptors are free again.
        for client in waiting:
            assert client.read().status == 200
        with Client(("127.0.0.1", port)) as client:
            assert client.get("/who").status == 200
    finally:
        for sock in hogs:
            sock.close()
        for client in waiting:
            client.sock.close()
        status, err = stop(process)
    assert status == 0, err
    complaints = err.count("Too many open files")
    # Once per listener per 10 s at most: 2 workers, one listener each.
    assert 1 <= complaints <= 4, err


# -- clients that stop reading ---------------------------------------------------------

SLOW_READER_CASES = {
    # kind: (server, request bytes)
    "fast path, pipelined": ("FastBig", b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * 2000),
    "HttpServer stream, chunked": ("streams", b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"),
    "HttpServer stream, HTTP/1.0": ("streams", b"GET /stream HTTP/1.0\r\n\r\n"),
    "static sendfile": ("streams", b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"),
    "WSGI, Content-Length": ("wsgi", b"GET /length HTTP/1.1\r\nHost: t\r\n\r\n"),
    "WSGI, chunked": ("wsgi", b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n"),
}


@pytest.fixture(scope="module")
def slow_reader_servers():
    from parallio import Runtime, protocol_ref
    from parallio.runtime import make_server

    from . import _slow_reader_apps as apps

    endpoints = {}
    for name, app in (("FastBig", "tests._slow_reader_apps:FastBig"),
                      ("streams", apps.streams), ("wsgi", apps.wsgi)):
        endpoint = endpoints[name] = make_server("127.0.0.1", 0)
        endpoint.protocol = protocol_ref(app)
    # One worker process: its memory is the server's memory.
    runtime = Runtime(list(endpoints.values()), workers=1, parallel="processes", io="auto")
    runtime.start()
    try:
        yield runtime, {name: endpoint.port for name, endpoint in endpoints.items()}
    finally:
        runtime.stop()


@pytest.mark.parametrize("kind", SLOW_READER_CASES)
def test_a_client_that_stops_reading_costs_bounded_memory(kind, slow_reader_servers):
    from ._slow_reader_apps import SIZE

    runtime, ports = slow_reader_servers
    server, request = SLOW_READER_CASES[kind]
    pid = runtime.worker_info[0]["pid"]
    before_rss = rss(pid)
    before_out = runtime.stats()[0]["bytes_out"]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", ports[server]))
        sock.sendall(request)
        received = 0
        while received < 256 * 1024:  # the response has begun; then no more reading
            received += len(sock.recv(65536))
        time.sleep(2.0)
        grown = rss(pid) - before_rss
        sent = runtime.stats()[0]["bytes_out"] - before_out
    assert sent < 16 << 20, f"{kind}: {sent >> 20} MiB sent to a client that stopped reading"
    assert grown < 32 << 20, f"{kind}: the worker grew by {grown >> 20} MiB (of {SIZE >> 20})"


def test_pipelined_requests_held_for_a_slow_reader_are_all_answered(slow_reader_servers):
    runtime, ports = slow_reader_servers
    with Client(("127.0.0.1", ports["FastBig"]), timeout=20) as client:
        client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * 100)
        time.sleep(0.5)  # the server stops at the high water mark meanwhile
        for _ in range(100):
            reply = client.read()
            assert reply.status == 200 and len(reply.body) == 1 << 20
