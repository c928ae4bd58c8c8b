"""The Engine contract (parallio/engine/base.py) on real sockets, for every
engine this machine can run. Each wait is bounded: a missing completion
fails its test instead of hanging the run."""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import socket
import tempfile
import time
from typing import Callable, Iterator

import pytest

from parallio.engine.base import READ_CHUNK, Engine

DEADLINE = 5.0

# name -> (module, class, constructor keywords)
ENGINE_VARIANTS = {
    "epoll": ("parallio.engine.epoll", "EpollEngine", {}),
    "uring": ("parallio.engine.uring", "UringEngine", {}),
    # Single-shot accept and recv (from the buffer ring), re-armed each time.
    "uring-singleshot": ("parallio.engine.uring", "UringEngine", {"multishot": False}),
    # What kernels older than 5.19 get: single-shot accept and recv into
    # per-connection buffers, cancellation op by op.
    "uring-compat": ("parallio.engine.uring", "UringEngine",
                     {"multishot": False, "buffer_ring": False, "cancel_by_fd": False}),
}


def _engine_class(variant: str) -> type[Engine]:
    module_name, class_name, _ = ENGINE_VARIANTS[variant]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        pytest.skip(f"{module_name} is not written yet")
    if variant.startswith("uring"):
        from parallio.engine import _uring_abi
        if not _uring_abi.probe():
            pytest.skip("io_uring_setup is refused here (seccomp, or kernel < 5.11)")
    return getattr(module, class_name)


@pytest.fixture(params=list(ENGINE_VARIANTS))
def engine(request) -> Iterator[Engine]:
    cls = _engine_class(request.param)
    instance = cls(**ENGINE_VARIANTS[request.param][2])
    try:
        yield instance
    finally:
        instance.shutdown()


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(params=[
    pytest.param((socket.AF_INET, "127.0.0.1"), id="ipv4"),
    pytest.param((socket.AF_INET6, "::1"), id="ipv6", marks=pytest.mark.skipif(
        not _ipv6_available(), reason="no IPv6 loopback")),
])
def family(request) -> tuple[int, str]:
    return request.param


# -- helpers ------------------------------------------------------------------

def wait_for(engine: Engine, condition: Callable[[], bool], what: str,
             deadline: float = DEADLINE) -> None:
    """Poll ``engine`` until ``condition()``; fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        engine.poll(0.02)


def quiet_period(engine: Engine, seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        engine.poll(0.02)


def listener(family: tuple[int, str], backlog: int = 128) -> socket.socket:
    sock = socket.socket(family[0], socket.SOCK_STREAM)
    sock.bind((family[1], 0))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def client_for(server: socket.socket) -> socket.socket:
    sock = socket.create_connection(server.getsockname()[:2], timeout=DEADLINE)
    return sock


@pytest.fixture
def pair(family) -> Iterator[tuple[int, socket.socket]]:
    """(server-side descriptor for the engine, client socket)."""
    with listener(family) as server:
        client = client_for(server)
        server.settimeout(DEADLINE)
        accepted, _ = server.accept()
    accepted.setblocking(False)
    fd = accepted.detach()
    try:
        yield fd, client
    finally:
        client.close()
        try:
            os.close(fd)
        except OSError:
            pass   # the test closed it through the engine


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        assert chunk, "peer closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def drain_while_sending(engine: Engine, client: socket.socket, total: int,
                        submit: Callable[[int, Callable[[int], None]], None],
                        already_sent: int = 0) -> bytes:
    """Send ``total`` bytes by calling ``submit(sent_so_far, on_sent)`` again
    after each completion, reading the client side meanwhile; return what the
    client got. Fails on an error or after the deadline."""
    client.setblocking(False)
    received = bytearray()
    state = {"sent": already_sent, "in_flight": False}

    def on_sent(result: int) -> None:
        assert result > 0, f"send failed or stalled: {result}"
        state["sent"] += result
        state["in_flight"] = False

    end = time.monotonic() + DEADLINE * 2
    while state["sent"] < total or len(received) < total:
        assert time.monotonic() < end, f"sent {state['sent']}, received {len(received)} of {total}"
        if not state["in_flight"] and state["sent"] < total:
            state["in_flight"] = True
            submit(state["sent"], on_sent)
            assert state["in_flight"], "callback ran inside the submitting call"
        engine.poll(0.001)
        try:
            while chunk := client.recv(1 << 20):
                received += chunk
        except BlockingIOError:
            pass
    return bytes(received)


# -- accept ---------------------------------------------------------------------

def test_accept_many_connections(engine, family):
    with listener(family) as server:
        accepted: list[int] = []
        engine.accept(server.fileno(), accepted.append)
        clients = [client_for(server) for _ in range(40)]
        try:
            wait_for(engine, lambda: len(accepted) >= 40, "40 accepts")
            assert all(fd >= 0 for fd in accepted), accepted
            assert len(set(accepted)) == 40
            for fd in accepted:
                assert not os.get_blocking(fd)
                assert not os.get_inheritable(fd)
            engine.stop_accepting(server.fileno())
            late = client_for(server)
            clients.append(late)
            quiet_period(engine)
            assert len(accepted) == 40, "on_accept called after stop_accepting"
        finally:
            for fd in accepted:
                engine.close(fd)
            for client in clients:
                client.close()


def test_accept_then_read_and_close_from_callbacks(engine, family):
    """The usual server shape: each callback submits the next operation."""
    with listener(family) as server:
        echoed: list[bytes] = []
        closed: list[int] = []

        def on_accept(fd: int) -> None:
            assert fd >= 0

            def on_data(data) -> None:
                if data:
                    engine.send(fd, data, lambda n: echoed.append(data))
                else:
                    engine.close(fd)
                    closed.append(fd)

            engine.start_reading(fd, on_data)

        engine.accept(server.fileno(), on_accept)
        with client_for(server) as client:
            client.sendall(b"ping")
            wait_for(engine, lambda: echoed, "the echo")
            assert recv_exactly(client, 4) == b"ping"
        wait_for(engine, lambda: closed, "EOF to close the server side")


# -- reading --------------------------------------------------------------------

def test_read_chunks_then_eof(engine, pair):
    fd, client = pair
    received: list = []
    engine.start_reading(fd, received.append)
    payload = os.urandom(300_000)
    client.sendall(payload)
    wait_for(engine, lambda: sum(len(c) for c in received) >= len(payload), "the payload")
    client.shutdown(socket.SHUT_WR)
    wait_for(engine, lambda: received and received[-1] == b"", "EOF")
    quiet_period(engine, 0.1)
    assert received.count(b"") == 1 and received[-1] == b""
    assert all(type(chunk) is bytes and len(chunk) <= READ_CHUNK for chunk in received)
    assert b"".join(received) == payload
    engine.close(fd)


def test_reset_is_reported_as_error(engine, pair):
    fd, client = pair
    received: list = []
    engine.start_reading(fd, received.append)
    # SO_LINGER 0: close sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    wait_for(engine, lambda: received, "the reset")
    quiet_period(engine, 0.1)
    assert received == [-errno.ECONNRESET]
    engine.close(fd)


def test_stop_and_start_reading_keep_data(engine, pair):
    fd, client = pair
    received: list = []

    def on_data(data) -> None:
        received.append(data)
        if data == b"first":
            engine.stop_reading(fd)   # from inside the callback

    engine.start_reading(fd, on_data)
    client.sendall(b"first")
    wait_for(engine, lambda: received, "the first chunk")
    for part in (b"second", b"-third", b"-fourth"):
        client.sendall(part)
        quiet_period(engine, 0.05)
    client.shutdown(socket.SHUT_WR)
    quiet_period(engine, 0.1)
    assert received == [b"first"], "on_data called while reading was stopped"
    engine.start_reading(fd, received.append)
    wait_for(engine, lambda: received[-1] == b"", "held data then EOF")
    assert b"".join(received[1:]) == b"second-third-fourth"
    engine.close(fd)


def test_pause_resume_repeatedly_loses_nothing(engine, pair):
    fd, client = pair
    received: list = []
    engine.start_reading(fd, received.append)
    payload = os.urandom(200_000)
    client.setblocking(False)
    sent = 0
    end = time.monotonic() + DEADLINE
    while not received or received[-1] != b"":
        assert time.monotonic() < end, "timed out"
        if sent < len(payload):
            try:
                sent += client.send(payload[sent:sent + 7000])
            except BlockingIOError:
                pass
            if sent == len(payload):
                client.shutdown(socket.SHUT_WR)
        engine.stop_reading(fd)
        engine.poll(0)
        engine.start_reading(fd, received.append)
        engine.poll(0.001)
    assert b"".join(received[:-1]) == payload
    engine.close(fd)


# -- writing --------------------------------------------------------------------

def test_send_delivers_and_completes_later(engine, pair):
    fd, client = pair
    results: list[int] = []
    engine.send(fd, b"hello", results.append)
    assert results == [], "callback ran inside send()"
    wait_for(engine, lambda: results, "the send")
    assert results == [5]
    assert recv_exactly(client, 5) == b"hello"
    for data in (bytearray(b"bytearray"), memoryview(b"--memoryview--")[2:-2]):
        engine.send(fd, data, results.append)
        wait_for(engine, lambda: len(results) == 2, "the send")
        assert recv_exactly(client, len(data)) == bytes(data)
        results.pop()
    engine.close(fd)


def test_partial_send_to_slow_reader(engine, pair):
    fd, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    payload = os.urandom(16 << 20)
    results: list[int] = []
    engine.send(fd, payload, results.append)
    wait_for(engine, lambda: results, "a partial send into a full socket buffer")
    assert 0 < results[0] < len(payload)
    view = memoryview(payload)

    def submit(sent: int, on_sent) -> None:
        engine.send(fd, view[sent:], on_sent)

    received = drain_while_sending(engine, client, len(payload), submit, already_sent=results[0])
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    engine.close(fd)


def test_send_error_after_peer_reset(engine, pair):
    fd, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    results: list[int] = []
    for attempt in range(1, 50):
        engine.send(fd, b"x" * 1000, results.append)
        wait_for(engine, lambda: len(results) == attempt, "a send")
        if results[-1] < 0:
            break
        time.sleep(0.01)
    assert results[-1] in (-errno.EPIPE, -errno.ECONNRESET), results
    engine.close(fd)


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
def test_sendmsg_gathers(engine, pair, big):
    fd, client = pair
    results: list[int] = []
    tail = b"g" * (100_000 if big else 10)
    parts = [b"ab", bytearray(b"cd"), memoryview(b"..ef")[2:], b"", tail]
    engine.sendmsg(fd, parts, results.append)
    assert results == []
    wait_for(engine, lambda: results, "the gather-send")
    total = results[0]
    assert 0 < total <= 6 + len(tail)
    assert recv_exactly(client, total) == (b"abcdef" + tail)[:total]
    engine.close(fd)


def test_sendfile_bigger_than_socket_buffers(engine, pair):
    fd, client = pair
    size = 8 << 20
    content = os.urandom(size)
    with tempfile.TemporaryFile() as file:
        file.write(content)
        file.flush()

        def submit(offset: int, on_sent) -> None:
            engine.sendfile(fd, file.fileno(), offset, size - offset, on_sent)

        assert drain_while_sending(engine, client, size, submit) == content
        at_end: list[int] = []
        engine.sendfile(fd, file.fileno(), size, 1000, at_end.append)
        wait_for(engine, lambda: at_end, "sendfile at end of file")
        assert at_end == [0]
    engine.close(fd)


# -- connect --------------------------------------------------------------------

def test_connect_succeeds_and_is_refused(engine, family):
    with listener(family) as server:
        address = server.getsockname()
        sock = socket.socket(family[0], socket.SOCK_STREAM)
        sock.setblocking(False)
        fd = sock.detach()
        results: list[int] = []
        engine.connect(fd, (family[1], address[1]), results.append)
        assert results == []
        wait_for(engine, lambda: results, "connect")
        assert results == [0]
        server.settimeout(DEADLINE)
        peer, _ = server.accept()
        with peer:
            sent: list[int] = []
            engine.send(fd, b"over the connected socket", sent.append)
            wait_for(engine, lambda: sent, "send after connect")
            assert recv_exactly(peer, sent[0]) == b"over the connected socket"
        engine.close(fd)

    with socket.socket(family[0], socket.SOCK_STREAM) as probe:
        probe.bind((family[1], 0))
        closed_port = probe.getsockname()[1]
    sock = socket.socket(family[0], socket.SOCK_STREAM)
    sock.setblocking(False)
    fd = sock.detach()
    refused: list[int] = []
    engine.connect(fd, (family[1], closed_port), refused.append)
    wait_for(engine, lambda: refused, "connection refused")
    assert refused == [-errno.ECONNREFUSED]
    engine.close(fd)


# -- close ----------------------------------------------------------------------

def test_close_cancels_pending_operations(engine, pair):
    fd, client = pair
    calls: list = []
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    engine.start_reading(fd, calls.append)
    big = os.urandom(16 << 20)
    end = time.monotonic() + DEADLINE
    while True:   # fill the socket buffers until a send stays pending
        assert time.monotonic() < end, "sends never blocked"
        engine.send(fd, big, calls.append)
        quiet_period(engine, 0.05)
        if not calls:
            break
        calls.clear()
    # A read is armed and a send waits for room: close cancels both, and the
    # descriptor is really closed once close() returns: without another
    # poll, the peer sees the connection end (EOF after the bytes already
    # sent, or a reset) rather than a timeout.
    engine.close(fd)
    client.settimeout(DEADLINE)
    try:
        while client.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    quiet_period(engine, 0.3)
    assert calls == [], "a callback ran for a closed descriptor"


def test_close_from_callback_drops_completions_already_received(engine, family):
    """Two connections complete in the same turn; the first callback closes
    the other, whose completion is already waiting: it must not run."""
    with listener(family) as server:
        fds: list[int] = []
        engine.accept(server.fileno(), fds.append)
        clients = [client_for(server), client_for(server)]
        wait_for(engine, lambda: len(fds) == 2, "two accepts")
        calls: list[int] = []

        def reader(fd: int, other: int):
            def on_data(data) -> None:
                calls.append(fd)
                engine.close(other)
            return on_data

        engine.start_reading(fds[0], reader(fds[0], fds[1]))
        engine.start_reading(fds[1], reader(fds[1], fds[0]))
        engine.poll(0)
        for client in clients:
            client.sendall(b"x")
        time.sleep(0.05)   # both chunks arrive before the next turn
        wait_for(engine, lambda: calls, "one callback")
        quiet_period(engine, 0.2)
        assert len(calls) == 1, calls
        engine.close(calls[0])
        for client in clients:
            client.close()


def test_closed_descriptor_number_reused_at_once(engine, family):
    """A new connection given a closed descriptor's number sees nothing
    meant for the old one."""
    with listener(family) as server:
        server.settimeout(DEADLINE)
        first, second = client_for(server), client_for(server)
        old_sock, _ = server.accept()
        new_sock, _ = server.accept()
        old_sock.setblocking(False)
        new_sock.setblocking(False)
        old_fd = old_sock.detach()
        stale: list = []
        engine.start_reading(old_fd, stale.append)
        engine.send(old_fd, b"x", stale.append)
        engine.close(old_fd)
        new_fd = os.dup2(new_sock.fileno(), old_fd)
        new_sock.close()
        fresh: list = []
        engine.start_reading(new_fd, fresh.append)
        second.sendall(b"new")
        first.sendall(b"old")
        wait_for(engine, lambda: fresh, "data on the new connection")
        quiet_period(engine, 0.1)
        assert stale == [] and fresh == [b"new"]
        engine.close(new_fd)
        first.close()
        second.close()


# -- poll -----------------------------------------------------------------------

def test_poll_timeout_is_honoured(engine):
    start = time.monotonic()
    engine.poll(0)
    assert time.monotonic() - start < 0.1
    start = time.monotonic()
    engine.poll(0.25)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1.0, elapsed
    start = time.monotonic()
    engine.poll(0.0015)
    assert time.monotonic() - start < 0.1
