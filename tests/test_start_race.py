"""The threads host starts every time, although its workers import the
user's module at the same moment (``ObjectRef.resolve`` waits for a module
another thread is still initializing instead of taking it half made)."""

from __future__ import annotations

import concurrent.futures
import socket
import sys

import pytest

import parallio

from .conftest import recv_until
from .test_cli import start_cli, stop

MODULE = "tests._slow_import"
STARTS = 50


def _hello(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hi\n")
        return recv_until(sock)


def test_register_and_start_on_the_threads_host_50_times():
    for _ in range(STARTS):
        parallio.register(parallio.server("127.0.0.1", 0), f"{MODULE}:Hello")
        # register() imported it here; gone again, every worker imports it
        # at once, as they would in a fresh process.
        del sys.modules[MODULE]
        runtime = parallio.start(workers=4, parallel="threads", io="epoll")
        try:
            assert _hello(runtime.endpoints[0].port) == b"hello\n"
        finally:
            runtime.stop()


def _serve_once() -> None:
    """Start ``serve MODULE:Hello --parallel threads``, ask it once, stop it."""
    process, port = start_cli("serve", f"{MODULE}:Hello", "--parallel", "threads",
                              "--workers", "4", "--io", "epoll")
    try:
        assert _hello(port) == b"hello\n"
    finally:
        status, err = stop(process)
    assert status == 0, err


@pytest.mark.long
@pytest.mark.timeout(240)
def test_serve_on_the_threads_host_50_times():
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _serve_once(), range(STARTS)))
