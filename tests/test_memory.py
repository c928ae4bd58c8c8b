"""Memory after bursts: a server gives back what bursts of big requests took,
and bounds what unfinished request bodies may buffer at once.

Each server runs in a process of its own (its RSS, summed over its worker
processes, is what is measured), started through the command line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ENGINES, HOSTS, engine_skip_reason, host_skip_reason
from .test_cli import start_server_process, stop

ROOT = Path(__file__).resolve().parent.parent
#: RSS may end at most this much above its warm figure after a burst.
RETURN_SLACK = 0.10


def rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its children, in MB."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    total = 0
    for each in [pid, *map(int, children.stdout.split())]:
        try:
            with open(f"/proc/{each}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def get(sock: socket.socket, extra: bytes = b"") -> None:
    sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n")
    data = b""
    while b"Hello, World!" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk


def warm_up(port: int, requests: int = 1000) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for number in range(requests):
            get(sock, b"X-Request: %d\r\n" % number)


def burst_of_big_heads(port: int, connections: int, head_kib: int = 60) -> None:
    """``connections`` connections at once, each a head of ``head_kib`` KiB
    (under the 64 KiB limit) held open until all have sent theirs."""
    fields = b"".join(b"X-Big-%d: %s\r\n" % (index, b"v" * 1000) for index in range(head_kib))
    socks = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            socks.append(sock)
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: h\r\n" + fields)
        for sock in socks:
            sock.sendall(b"\r\n")
        for sock in socks:
            data = b""
            while b"Hello, World!" not in data:
                chunk = sock.recv(65536)
                assert chunk, "the server closed a burst connection"
                data += chunk
    finally:
        for sock in socks:
            sock.close()


def settled_rss(pid: int, ceiling: float, deadline_s: float = 8.0) -> float:
    """Wait (bounded) for RSS to come under ``ceiling``; return the last figure."""
    deadline = time.monotonic() + deadline_s
    while True:
        figure = rss_mb(pid)
        if figure <= ceiling or time.monotonic() > deadline:
            return figure
        time.sleep(0.2)


def _combos() -> list:
    params = []
    for host in HOSTS:
        for engine in ENGINES:
            reason = host_skip_reason(host) or engine_skip_reason(engine)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(host, engine, id=f"{host}-{engine}", marks=marks))
    return params


@pytest.mark.parametrize("host, engine", _combos())
def test_rss_returns_after_bursts_of_big_heads(host: str, engine: str) -> None:
    process, port, _ = start_server_process(
        [sys.executable, "-m", "parallio", "serve",
         "parallio.bench.apps:BenchApp", "--port", "0", "--workers", "1",
         "--parallel", host, "--io", engine])
    try:
        warm_up(port)
        warm = rss_mb(process.pid)
        ceiling = warm * (1 + RETURN_SLACK)
        for round_number in range(3):
            burst_of_big_heads(port, connections=300)
            after = settled_rss(process.pid, ceiling)
            assert after <= ceiling, (
                f"round {round_number + 1}: RSS {after:.1f} MB, warm {warm:.1f} MB")
            warm_up(port, 100)   # still serving
    finally:
        stop(process)


BUDGET_APP = "tests._http_apps:uploads"


def test_unfinished_bodies_are_bounded_per_worker() -> None:
    """Uploads in progress together may buffer no more than the budget
    (16 MiB here): the one that would pass it is refused with 503 at once,
    the others finish, and a request after them is served."""
    process, port, _ = start_server_process(
        [sys.executable, "-m", "parallio", "serve", BUDGET_APP, "--port", "0", "--workers", "1"])
    body = 6 * 1024 * 1024
    head = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % body
    socks = []
    try:
        for number in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            socks.append(sock)
            try:
                # All but the last byte: 6, 12, then 18 MiB buffered in all.
                sock.sendall(head + b"x" * (body - 1))
            except (BrokenPipeError, ConnectionResetError):
                assert number == 2, "refused before the budget was passed"
            time.sleep(0.2)
        third = read_status(socks[2])
        assert third in (503, None), third   # None: reset before the answer was read
        for sock in socks[:2]:
            sock.sendall(b"x")
            assert read_status(sock) == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
            assert read_status(sock) == 200
    finally:
        for sock in socks:
            sock.close()
        stop(process)


def read_status(sock: socket.socket) -> int | None:
    """The status of the response on ``sock``; None if it closed or reset first."""
    reply = b""
    try:
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            reply += chunk
    except ConnectionResetError:
        return None
    return int(reply.split(b" ", 2)[1])


def test_rss_returns_after_many_big_uploads() -> None:
    """40 uploads of 4 MiB at once to a WSGI application: memory comes back."""
    process, port, _ = start_server_process(
        [sys.executable, "-m", "parallio", "wsgi",
         "tests._wsgi_apps:upload_size", "--port", "0", "--workers", "1",
         "--parallel", "threads"])
    body = b"u" * (4 * 1024 * 1024)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(50):
                sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
                reply = b""
                while not reply.endswith(b"2"):
                    reply += sock.recv(65536)
        warm = rss_mb(process.pid)
        for _ in range(2):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
            for sock in socks:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
            for sock in socks:
                reply = b""
                while not reply.endswith(str(len(body)).encode()):
                    chunk = sock.recv(65536)
                    assert chunk, "an upload was refused"
                    reply += chunk
                sock.close()
            after = settled_rss(process.pid, warm * (1 + RETURN_SLACK))
            assert after <= warm * (1 + RETURN_SLACK), f"RSS {after:.1f} MB, warm {warm:.1f} MB"
    finally:
        stop(process)


@pytest.mark.parametrize("target, path, body", [
    ("tests._protocols:FastApp", b"/plaintext", b""),
    ("tests._http_apps:app", b"/plaintext", b""),
    ("tests._http_apps:app", b"/stream?pieces=3&size=10", b""),
    ("tests._wsgi_apps:wsgi_server", b"/echo", b"posted"),
], ids=["fast-path", "http-server", "http-server-stream", "wsgi"])
@pytest.mark.parametrize("engine", ENGINES)
def test_closed_connections_leave_no_reference_cycles(target, path, body, engine):
    """Refcounting alone frees what a connection and its requests held:
    a cycle would keep request bodies alive until a full garbage collection
    (what made memory stay high after bursts of uploads)."""
    import gc

    from .conftest import serving
    reason = engine_skip_reason(engine)
    if reason:
        pytest.skip(reason)
    with serving(target, ("threads", engine)) as runtime:
        address = ("127.0.0.1", runtime.endpoints[0].port)
        head = (b"POST " if body else b"GET ") + path + b" HTTP/1.1\r\nHost: h\r\n"
        request = head + (b"Content-Length: %d\r\n\r\n" % len(body) + body if body else b"\r\n")

        def exchange_requests() -> None:
            for _ in range(20):
                with socket.create_connection(address, timeout=10) as sock:
                    sock.sendall(request * 3)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass

        exchange_requests()   # imports, caches and first-use state settle
        time.sleep(0.3)
        gc.collect()
        gc.disable()
        try:
            exchange_requests()
            time.sleep(0.3)   # the worker finishes its closes
            assert gc.collect() == 0
        finally:
            gc.enable()
