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

from parallio.engine.base import READ_CHUNK, Engine, Handle

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
    module = importlib.import_module(module_name)
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
def pair(engine, family) -> Iterator[tuple[Handle, socket.socket]]:
    """(the engine's handle of a server-side connection, client socket)."""
    with listener(family) as server:
        client = client_for(server)
        server.settimeout(DEADLINE)
        accepted, _ = server.accept()
    accepted.setblocking(False)
    handle = engine.open(accepted.detach())
    try:
        yield handle, client
    finally:
        client.close()
        engine.close(handle)   # a no-op when the test closed it
        engine.poll(0)         # closes queued in the ring take effect


@pytest.fixture
def listening(engine, family) -> Iterator[tuple[Handle, socket.socket]]:
    """(the engine's handle of a listening socket, that socket)."""
    with listener(family) as server:
        handle = engine.open(server.fileno())
        try:
            yield handle, server
        finally:
            engine.release(handle)


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

def test_accept_many_connections(engine, listening):
    listen_handle, server = listening
    accepted: list[int] = []
    engine.accept(listen_handle, accepted.append)
    clients = [client_for(server) for _ in range(40)]
    try:
        wait_for(engine, lambda: len(accepted) >= 40, "40 accepts")
        assert all(fd >= 0 for fd in accepted), accepted
        assert len(set(accepted)) == 40
        for fd in accepted:
            assert not os.get_blocking(fd)
            assert not os.get_inheritable(fd)
        engine.stop_accepting(listen_handle)
        late = client_for(server)
        clients.append(late)
        quiet_period(engine)
        assert len(accepted) == 40, "on_accept called after stop_accepting"
    finally:
        for fd in accepted:
            engine.close(engine.open(fd))
        for client in clients:
            client.close()


def test_accepting_again_replaces_the_callback(engine, listening):
    listen_handle, server = listening
    first: list[int] = []
    second: list[int] = []
    engine.accept(listen_handle, first.append)
    engine.accept(listen_handle, second.append)
    with client_for(server):
        wait_for(engine, lambda: second, "an accept")
        assert first == []
        engine.close(engine.open(second[0]))


def test_accept_then_read_and_close_from_callbacks(engine, listening):
    """The usual server shape: each callback submits the next operation."""
    listen_handle, server = listening
    echoed: list[bytes] = []
    closed: list[int] = []

    def on_accept(fd: int) -> None:
        assert fd >= 0
        handle = engine.open(fd)

        def on_data(data) -> None:
            if data:
                engine.send(handle, data, lambda n: echoed.append(data))
            else:
                engine.close(handle)
                closed.append(fd)

        engine.start_reading(handle, on_data)

    engine.accept(listen_handle, on_accept)
    with client_for(server) as client:
        client.sendall(b"ping")
        wait_for(engine, lambda: echoed, "the echo")
        assert recv_exactly(client, 4) == b"ping"
    wait_for(engine, lambda: closed, "EOF to close the server side")


# -- reading --------------------------------------------------------------------

def test_read_chunks_then_eof(engine, pair):
    handle, client = pair
    received: list = []
    engine.start_reading(handle, received.append)
    payload = os.urandom(300_000)
    client.sendall(payload)
    wait_for(engine, lambda: sum(len(c) for c in received) >= len(payload), "the payload")
    client.shutdown(socket.SHUT_WR)
    wait_for(engine, lambda: received and received[-1] == b"", "EOF")
    quiet_period(engine, 0.1)
    assert received.count(b"") == 1 and received[-1] == b""
    assert all(type(chunk) is bytes and len(chunk) <= READ_CHUNK for chunk in received)
    assert b"".join(received) == payload
    engine.close(handle)


def test_reset_is_reported_as_error(engine, pair):
    handle, client = pair
    received: list = []
    engine.start_reading(handle, received.append)
    # SO_LINGER 0: close sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    wait_for(engine, lambda: received, "the reset")
    quiet_period(engine, 0.1)
    assert received == [-errno.ECONNRESET]
    engine.close(handle)


def test_stop_and_start_reading_keep_data(engine, pair):
    handle, client = pair
    received: list = []

    def on_data(data) -> None:
        received.append(data)
        if data == b"first":
            engine.stop_reading(handle)   # from inside the callback

    engine.start_reading(handle, on_data)
    client.sendall(b"first")
    wait_for(engine, lambda: received, "the first chunk")
    for part in (b"second", b"-third", b"-fourth"):
        client.sendall(part)
        quiet_period(engine, 0.05)
    client.shutdown(socket.SHUT_WR)
    quiet_period(engine, 0.1)
    assert received == [b"first"], "on_data called while reading was stopped"
    engine.start_reading(handle, received.append)
    wait_for(engine, lambda: received[-1] == b"", "held data then EOF")
    assert b"".join(received[1:]) == b"second-third-fourth"
    engine.close(handle)


def test_pause_resume_repeatedly_loses_nothing(engine, pair):
    handle, client = pair
    received: list = []
    engine.start_reading(handle, received.append)
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
        engine.stop_reading(handle)
        engine.poll(0)
        engine.start_reading(handle, received.append)
        engine.poll(0.001)
    assert b"".join(received[:-1]) == payload
    engine.close(handle)


# -- writing --------------------------------------------------------------------

def test_send_delivers_and_completes_later(engine, pair):
    handle, client = pair
    results: list[int] = []
    engine.send(handle, b"hello", results.append)
    assert results == [], "callback ran inside send()"
    wait_for(engine, lambda: results, "the send")
    assert results == [5]
    assert recv_exactly(client, 5) == b"hello"
    for data in (bytearray(b"bytearray"), memoryview(b"--memoryview--")[2:-2]):
        engine.send(handle, data, results.append)
        wait_for(engine, lambda: len(results) == 2, "the send")
        assert recv_exactly(client, len(data)) == bytes(data)
        results.pop()
    engine.close(handle)


def test_partial_send_to_slow_reader(engine, pair):
    handle, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    payload = os.urandom(16 << 20)
    results: list[int] = []
    engine.send(handle, payload, results.append)
    wait_for(engine, lambda: results, "a partial send into a full socket buffer")
    assert 0 < results[0] < len(payload)
    view = memoryview(payload)

    def submit(sent: int, on_sent) -> None:
        engine.send(handle, view[sent:], on_sent)

    received = drain_while_sending(engine, client, len(payload), submit, already_sent=results[0])
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    engine.close(handle)


def test_send_error_after_peer_reset(engine, pair):
    handle, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    results: list[int] = []
    for attempt in range(1, 50):
        engine.send(handle, b"x" * 1000, results.append)
        wait_for(engine, lambda: len(results) == attempt, "a send")
        if results[-1] < 0:
            break
        time.sleep(0.01)
    assert results[-1] in (-errno.EPIPE, -errno.ECONNRESET), results
    engine.close(handle)


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
def test_sendmsg_gathers(engine, pair, big):
    handle, client = pair
    results: list[int] = []
    tail = b"g" * (100_000 if big else 10)
    parts = [b"ab", bytearray(b"cd"), memoryview(b"..ef")[2:], b"", tail]
    engine.sendmsg(handle, parts, results.append)
    assert results == []
    wait_for(engine, lambda: results, "the gather-send")
    total = results[0]
    assert 0 < total <= 6 + len(tail)
    assert recv_exactly(client, total) == (b"abcdef" + tail)[:total]
    engine.close(handle)


def test_sendfile_bigger_than_socket_buffers(engine, pair):
    handle, client = pair
    size = 8 << 20
    content = os.urandom(size)
    with tempfile.TemporaryFile() as file:
        file.write(content)
        file.flush()

        def submit(offset: int, on_sent) -> None:
            engine.sendfile(handle, file.fileno(), offset, size - offset, on_sent)

        assert drain_while_sending(engine, client, size, submit) == content
        at_end: list[int] = []
        engine.sendfile(handle, file.fileno(), size, 1000, at_end.append)
        wait_for(engine, lambda: at_end, "sendfile at end of file")
        assert at_end == [0]
    engine.close(handle)


# -- connect --------------------------------------------------------------------

def test_connect_succeeds_and_is_refused(engine, family):
    with listener(family) as server:
        address = server.getsockname()
        sock = socket.socket(family[0], socket.SOCK_STREAM)
        sock.setblocking(False)
        handle = engine.open(sock.detach())
        results: list[int] = []
        engine.connect(handle, (family[1], address[1]), results.append)
        assert results == []
        wait_for(engine, lambda: results, "connect")
        assert results == [0]
        server.settimeout(DEADLINE)
        peer, _ = server.accept()
        with peer:
            sent: list[int] = []
            engine.send(handle, b"over the connected socket", sent.append)
            wait_for(engine, lambda: sent, "send after connect")
            assert recv_exactly(peer, sent[0]) == b"over the connected socket"
        engine.close(handle)

    with socket.socket(family[0], socket.SOCK_STREAM) as probe:
        probe.bind((family[1], 0))
        closed_port = probe.getsockname()[1]
    sock = socket.socket(family[0], socket.SOCK_STREAM)
    sock.setblocking(False)
    handle = engine.open(sock.detach())
    refused: list[int] = []
    engine.connect(handle, (family[1], closed_port), refused.append)
    wait_for(engine, lambda: refused, "connection refused")
    assert refused == [-errno.ECONNREFUSED]
    engine.close(handle)


# -- close ----------------------------------------------------------------------

def test_close_cancels_pending_operations(engine, pair):
    handle, client = pair
    calls: list = []
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    engine.start_reading(handle, calls.append)
    big = os.urandom(16 << 20)
    end = time.monotonic() + DEADLINE
    while True:   # fill the socket buffers until a send stays pending
        assert time.monotonic() < end, "sends never blocked"
        engine.send(handle, big, calls.append)
        quiet_period(engine, 0.05)
        if not calls:
            break
        calls.clear()
    # A read is armed and a send waits for room: close cancels both, and the
    # descriptor is really closed by the next poll at the latest: the peer
    # sees the connection end (EOF after the bytes already sent, or a
    # reset) rather than a timeout.
    engine.close(handle)
    engine.poll(0)
    client.settimeout(DEADLINE)
    try:
        while client.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    quiet_period(engine, 0.3)
    assert calls == [], "a callback ran for a closed descriptor"


def test_close_from_callback_drops_completions_already_received(engine, listening):
    """Two connections complete in the same turn; the first callback closes
    the other, whose completion is already waiting: it must not run."""
    listen_handle, server = listening
    handles: list[Handle] = []
    engine.accept(listen_handle, lambda fd: handles.append(engine.open(fd)))
    clients = [client_for(server), client_for(server)]
    wait_for(engine, lambda: len(handles) == 2, "two accepts")
    calls: list[Handle] = []

    def reader(handle: Handle, other: Handle):
        def on_data(data) -> None:
            calls.append(handle)
            engine.close(other)
        return on_data

    engine.start_reading(handles[0], reader(handles[0], handles[1]))
    engine.start_reading(handles[1], reader(handles[1], handles[0]))
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
    """A new connection given a closed descriptor's number, as soon as the
    kernel lets it be reused, sees nothing meant for the old one."""
    with listener(family) as server:
        server.settimeout(DEADLINE)
        first, second = client_for(server), client_for(server)
        old_sock, _ = server.accept()
        new_sock, _ = server.accept()
        old_sock.setblocking(False)
        new_sock.setblocking(False)
        old_fd = old_sock.detach()
        old = engine.open(old_fd)
        stale: list = []
        engine.start_reading(old, stale.append)
        engine.send(old, b"x", stale.append)
        engine.close(old)
        engine.poll(0)   # the close has run: the number is free
        new_fd = os.dup2(new_sock.fileno(), old_fd)
        new_sock.close()
        new = engine.open(new_fd)
        fresh: list = []
        engine.start_reading(new, fresh.append)
        second.sendall(b"new")
        first.sendall(b"old")
        wait_for(engine, lambda: fresh, "data on the new connection")
        quiet_period(engine, 0.1)
        assert stale == [] and fresh == [b"new"]
        engine.close(new)
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


# -- one-shot reads and readiness ------------------------------------------------

def test_recv_into_fills_the_callers_buffer(engine, pair):
    handle, client = pair
    buffer = bytearray(10)
    results: list[int] = []
    engine.recv_into(handle, buffer, results.append)
    quiet_period(engine, 0.05)
    assert results == [], "recv_into completed with nothing to read"
    client.sendall(b"0123456789abc")
    wait_for(engine, lambda: results, "the read")
    assert results == [10] and buffer == b"0123456789"
    engine.recv_into(handle, memoryview(buffer)[:5], results.append)
    wait_for(engine, lambda: len(results) == 2, "the second read")
    assert results[1] == 3 and buffer[:3] == b"abc"
    client.shutdown(socket.SHUT_WR)
    engine.recv_into(handle, buffer, results.append)
    wait_for(engine, lambda: len(results) == 3, "EOF")
    assert results[2] == 0


def test_wait_readable_and_writable(engine, pair):
    handle, client = pair
    events: list[tuple[str, int]] = []
    engine.wait_writable(handle, lambda mask: events.append(("writable", mask)))
    wait_for(engine, lambda: events, "writability")
    assert events[0][0] == "writable" and events[0][1] > 0
    engine.wait_readable(handle, lambda mask: events.append(("readable", mask)))
    quiet_period(engine, 0.1)
    assert len(events) == 1, "readable with nothing to read"
    client.sendall(b"x")
    wait_for(engine, lambda: len(events) == 2, "readability")
    assert events[1][0] == "readable"
    quiet_period(engine, 0.1)
    assert len(events) == 2, "a wait fires once"
    # Still readable (nothing was read): a new wait fires at once.
    engine.wait_readable(handle, lambda mask: events.append(("again", mask)))
    wait_for(engine, lambda: len(events) == 3, "level readiness")


def test_cancelled_waits_never_fire(engine, pair):
    handle, client = pair
    events: list[int] = []
    engine.wait_readable(handle, events.append)
    engine.poll(0)
    engine.cancel_waits(handle)
    client.sendall(b"x")
    quiet_period(engine, 0.2)
    assert events == []
    # Cancelled and armed again in the same turn: only the new one fires.
    engine.wait_readable(handle, lambda mask: events.append(1))
    engine.cancel_waits(handle)
    engine.wait_readable(handle, lambda mask: events.append(2))
    wait_for(engine, lambda: events, "the new wait")
    quiet_period(engine, 0.1)
    assert events == [2]


def test_shutdown_write_sends_eof_and_keeps_reading(engine, pair):
    handle, client = pair
    received: list = []
    engine.start_reading(handle, received.append)
    sent: list[int] = []
    engine.send(handle, b"last words", sent.append)
    wait_for(engine, lambda: sent, "the send")
    engine.shutdown_write(handle)
    engine.poll(0)
    client.settimeout(DEADLINE)
    assert recv_exactly(client, 10) == b"last words"
    assert client.recv(10) == b"", "no EOF after shutdown_write"
    client.sendall(b"still read")
    wait_for(engine, lambda: received, "data after shutdown_write")
    assert received == [b"still read"]


def test_release_leaves_the_descriptor_open(engine, pair):
    handle, client = pair
    calls: list = []
    engine.start_reading(handle, calls.append)
    engine.poll(0)
    engine.release(handle)
    client.sendall(b"for the owner")
    quiet_period(engine, 0.1)
    assert calls == []
    with socket.socket(fileno=os.dup(handle.fd)) as sock:
        sock.settimeout(DEADLINE)
        assert sock.recv(100) == b"for the owner"


def test_what_was_queued_before_close_never_reaches_the_next_socket(engine, family):
    """A shutdown just before close, the number then given to a new
    connection at once: the new one is never shut down. (io_uring's own
    shutdown op looks the number up later, in a kernel worker thread: this
    caught it, in some of the rounds.)"""
    with listener(family) as server:
        server.settimeout(DEADLINE)
        for _ in range(30):
            first, second = client_for(server), client_for(server)
            old_sock, _ = server.accept()
            old_sock.setblocking(False)
            old = engine.open(old_sock.detach())
            engine.shutdown_write(old)
            engine.close(old)
            engine.poll(0)                 # the close has run
            new_fd = server._accept()[0]   # takes the lowest free number
            os.set_blocking(new_fd, False)
            new = engine.open(new_fd)
            quiet_period(engine, 0.002)
            sent: list[int] = []
            engine.send(new, b"still open", sent.append)
            wait_for(engine, lambda: sent, "the send on the new connection")
            assert sent == [10]
            engine.close(new)
            engine.poll(0)
            first.close()
            second.close()


def test_trim_between_reads_loses_nothing(engine, pair):
    """trim() gives back the read buffers' pages after a burst; data read
    before and after it is whole."""
    handle, client = pair
    received = bytearray()
    engine.start_reading(handle, lambda data: received.extend(data) if data else None)
    payload = os.urandom(2 << 20)
    client.sendall(payload[:1 << 20])
    wait_for(engine, lambda: len(received) >= 1 << 20, "the first megabyte")
    engine.trim()
    client.sendall(payload[1 << 20:])
    wait_for(engine, lambda: len(received) >= 2 << 20, "the second megabyte")
    assert bytes(received) == payload
