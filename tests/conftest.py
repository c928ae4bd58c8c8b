from __future__ import annotations

import contextlib
import socket
from typing import Iterator

import pytest

from parallio import Runtime
from parallio.engine import uring_unavailable_reason
from parallio.host import InterpretersHost
from parallio import protocol_ref
from parallio.runtime import make_server

HOSTS = ["threads", "processes", "interpreters"]
ENGINES = ["epoll", "uring"]


def host_skip_reason(host: str) -> str | None:
    return InterpretersHost.unavailable_reason() if host == "interpreters" else None


def engine_skip_reason(engine: str) -> str | None:
    return uring_unavailable_reason() if engine == "uring" else None


def _combos() -> list:
    params = []
    for host in HOSTS:
        for engine in ENGINES:
            reason = host_skip_reason(host) or engine_skip_reason(engine)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param((host, engine), id=f"{host}-{engine}", marks=marks))
    return params


@pytest.fixture(params=_combos())
def combo(request) -> tuple[str, str]:
    """Every (host, engine) pair this Python and kernel support."""
    return request.param


@contextlib.contextmanager
def serving(protocol: str, combo: tuple[str, str], workers: int = 1,
            address: str = "127.0.0.1", drain_timeout: float = 5.0,
            **endpoint_options) -> Iterator[Runtime]:
    """A runtime serving ``protocol``; ``endpoint_options`` go to
    make_server (tls=, proxy_allowed=)."""
    host, engine = combo
    endpoint = make_server(address, 0, **endpoint_options)
    endpoint.protocol = protocol_ref(protocol)
    runtime = Runtime([endpoint], workers=workers, parallel=host, io=engine,
                      drain_timeout=drain_timeout)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def port_of(runtime: Runtime) -> int:
    return runtime.endpoints[0].port


def connect(runtime: Runtime, timeout: float = 5.0) -> socket.socket:
    endpoint = runtime.endpoints[0]
    sock = socket.create_connection((endpoint.address[0], endpoint.port), timeout=timeout)
    return sock


def recv_until(sock: socket.socket, terminator: bytes = b"\n", limit: int = 1 << 24) -> bytes:
    data = b""
    while not data.endswith(terminator):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        assert len(data) <= limit
    return data


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def request(runtime: Runtime, payload: bytes, terminator: bytes = b"\n") -> bytes:
    with connect(runtime) as sock:
        sock.sendall(payload)
        return recv_until(sock, terminator)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A test CA with server and client certificates (tests/_tls.py)."""
    from ._tls import make_certificates
    return make_certificates(tmp_path_factory.mktemp("tls"))
