"""The runtime end to end: every protocol rule on real sockets, in every
host and engine this Python and kernel support."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

import pytest

from parallio import Runtime, WorkerStartupError
from parallio.host import InterpretersHost
from parallio._ref import ObjectRef
from parallio.runtime import make_client, make_server

from .conftest import connect, recv_all, recv_exactly, recv_until, request, serving

P = "tests._protocols:"


def test_echo(combo):
    with serving(P + "Echo", combo) as runtime:
        with connect(runtime) as sock:
            for size in (1, 100, 70000):
                payload = os.urandom(size)
                sock.sendall(payload)
                assert recv_exactly(sock, size) == payload


def test_initial_bytes_value_and_callable(combo):
    with serving(P + "Greeter", combo) as runtime:
        with connect(runtime) as sock:
            assert recv_until(sock) == b"hello\n"
    with serving(P + "CallableGreeter", combo) as runtime:
        with connect(runtime) as sock:
            assert recv_until(sock) == b"welcome\n"


def test_connection_made_lost_and_transport(combo):
    with serving(P + "MadeAndLost", combo) as runtime:
        with connect(runtime) as sock:
            assert recv_until(sock) == b"made 127.0.0.1 True\n"
            sock.sendall(b"x")
            assert recv_until(sock) == b"same True\n"
        # One worker: connection_lost ran there before the next accept... give
        # the close a moment to reach the server.
        deadline = time.monotonic() + 5
        while True:
            with connect(runtime) as sock:
                assert recv_until(sock).startswith(b"made")
                sock.sendall(b"x")
                recv_until(sock)
            stats = runtime.stats()
            if stats[0]["connections"] <= 1 or time.monotonic() > deadline:
                break


@pytest.mark.parametrize("command, expected", [
    (b"bytes", b"bytes\n"),
    (b"str", "str \u00e9\n".encode()),
    (b"bytearray", b"bytearray\n"),
    (b"memoryview", b"memoryview\n"),
    (b"tuple", b"tuple\n"),
    (b"same\n", b"same\n"),
])
def test_return_values(combo, command, expected):
    with serving(P + "ReturnTypes", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(command)
            assert recv_until(sock) == expected


def test_none_sends_nothing_and_bad_return_closes(combo):
    with serving(P + "ReturnTypes", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"none")
            sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                sock.recv(10)
            sock.settimeout(5)
            sock.sendall(b"bad")
            assert recv_all(sock) == b""
        assert request(runtime, b"bytes") == b"bytes\n"
        assert runtime.stats()[0]["callback_errors"] == 1


def test_next_bytes_to_send(combo):
    with serving(P + "NextBytes", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"anything")
            assert recv_until(sock) == b"fixed reply\n"


def test_lines_mode_split_and_pipelined(combo):
    with serving(P + "Lines", combo) as runtime:
        with connect(runtime) as sock:
            for piece in (b"al", b"pha\r\nbe", b"ta\n", b"gamma\ndelta\n"):
                sock.sendall(piece)
                time.sleep(0.01)
            assert recv_until(sock, b"<delta>\n") == b"<alpha>\n<beta>\n<gamma>\n<delta>\n"
            sock.sendall(b"last-without-newline")
            sock.shutdown(socket.SHUT_WR)
            assert recv_all(sock) == b"<last-without-newline>\n"


def test_lines_mode_overlong_line_closes(combo):
    with serving(P + "Lines", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"x" * 5000)
            assert recv_all(sock) == b""
        assert request(runtime, b"ok\n") == b"<ok>\n"


def test_protocol_instance_per_connection(combo):
    with serving(P + "Counter", combo) as runtime:
        first, second = connect(runtime), connect(runtime)
        with first, second:
            for expected in (b"1\n", b"2\n", b"3\n"):
                first.sendall(b"x\n")
                assert recv_until(first) == expected
            second.sendall(b"x\n")
            assert recv_until(second) == b"1\n"


def test_send_complete_streams_without_buffering(combo):
    with serving("parallio.services:Chargen", combo) as runtime:
        with connect(runtime) as sock:
            received = recv_exactly(sock, 1 << 20)
        from parallio.services.protocols import _chargen_lines
        pattern = _chargen_lines()
        assert received == (pattern * (len(received) // len(pattern) + 1))[:len(received)]
        # The server queued one window at a time however fast we read.
        time.sleep(0.2)
        assert runtime.stats()[0]["connections"] == 0


def test_partial_sends_to_slow_reader(combo):
    with serving(P + "BigResponse", combo) as runtime:
        with connect(runtime, timeout=20) as sock:
            # 8 MiB cannot fit in the socket buffers: the server must resume
            # partial sends, while this reader is slow at first.
            sock.sendall(b"go")
            received = bytearray()
            while len(received) < 8 * 1024 * 1024:
                chunk = sock.recv(32768)
                assert chunk
                received += chunk
                if len(received) < 256 * 1024:
                    time.sleep(0.001)
        assert received == bytes(range(256)) * (8 * 1024 * 1024 // 256)


def test_slow_reader_bounds_memory(combo):
    """A peer that sends but never reads: the server stops reading from it
    once its unsent echo passes the high-water mark."""
    with serving(P + "Echo", combo) as runtime:
        sock = connect(runtime)
        sock.settimeout(0.05)
        chunk = b"x" * 65536
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += sock.send(chunk)
            except socket.timeout:
                break  # both directions' buffers are full: the server stopped reading
        before = runtime.stats()[0]["bytes_in"]
        time.sleep(0.3)
        after = runtime.stats()[0]["bytes_in"]
        assert sent < 64 * 1024 * 1024, "the server kept reading from a peer that never reads"
        assert after == before
        assert after < 16 * 1024 * 1024
        sock.close()


def test_thousand_concurrent_connections(combo):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"needs 2400 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    try:
        with serving(P + "Echo", combo, workers=2) as runtime:
            socks = []
            try:
                for _ in range(1000):
                    socks.append(connect(runtime, timeout=10))
                for index, sock in enumerate(socks):
                    sock.sendall(b"%d\n" % index)
                for index, sock in enumerate(socks):
                    assert recv_until(sock) == b"%d\n" % index
                assert sum(s["connections"] for s in runtime.stats()) == 1000
            finally:
                for sock in socks:
                    sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_clients_closing_mid_stream(combo):
    with serving("parallio.services:Chargen", combo) as runtime:
        for _ in range(20):
            sock = connect(runtime)
            sock.recv(1000)
            # RST instead of FIN: the worker sees ECONNRESET mid-send.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            sock.close()
        deadline = time.monotonic() + 5
        while runtime.stats()[0]["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.stats()[0]["connections"] == 0
        with connect(runtime) as sock:
            assert len(recv_exactly(sock, 10000)) == 10000


def test_callback_exception_closes_connection_worker_survives(combo, caplog):
    with serving(P + "Raises", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"fine")
            assert recv_until(sock) == b"ok\n"
            sock.sendall(b"boom")
            assert recv_all(sock) == b""
        assert request(runtime, b"again") == b"ok\n"
        assert runtime.stats()[0]["callback_errors"] == 1


def test_exception_handler_gets_it(combo):
    with serving(P + "Handled", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"key1")
            assert recv_until(sock) == b"handled data_received KeyError 'key1'\n"
            sock.sendall(b"key2")
            assert recv_until(sock) == b"handled data_received KeyError 'key2'\n"


def test_close_after_reply_flushes(combo):
    with serving(P + "CloseAfterReply", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"x")
            assert recv_all(sock) == b"bye\n"


def test_sendfile_whole_and_ranged(combo, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(payload)
    with serving(P + "SendFile", combo) as runtime:
        with connect(runtime, timeout=20) as sock:
            sock.sendall(f"{path}\n".encode())
            assert recv_exactly(sock, len(payload) + 2) == b"[" + payload + b"]"
            sock.sendall(f"1000:5000:{path}\n".encode())
            assert recv_exactly(sock, 5002) == b"[" + payload[1000:6000] + b"]"


def test_ipv6(combo):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 unusable: {exc}")
    with serving(P + "Echo", combo, address="::1") as runtime:
        with socket.create_connection(("::1", runtime.endpoints[0].port), timeout=5) as sock:
            sock.sendall(b"six\n")
            assert recv_until(sock) == b"six\n"


def test_connections_spread_over_workers(combo):
    with serving(P + "WhoAmI", combo, workers=2) as runtime:
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(request(runtime, b"?").split()[0])
        assert seen == {b"1", b"2"}


def test_worker_restart(combo):
    with serving(P + "DiesOnRequest", combo, workers=1) as runtime:
        before = request(runtime, b"who").split()
        with connect(runtime) as sock:
            sock.sendall(b"die")
            assert recv_all(sock) == b""
        deadline = time.monotonic() + 15
        while True:
            try:
                after = request(runtime, b"who").split()
                break
            except OSError:
                assert time.monotonic() < deadline, "the worker was not restarted"
                time.sleep(0.1)
        assert after[0] == before[0] == b"1"
        if combo[0] == "processes":
            assert after[1] != before[1]


def test_unimportable_protocol_is_a_clear_error(combo):
    endpoint = make_server("127.0.0.1", 0)
    endpoint.protocol = ObjectRef("tests._protocols:NoSuchClass")
    runtime = Runtime([endpoint], workers=1, parallel=combo[0], io=combo[1])
    started = time.monotonic()
    with pytest.raises(WorkerStartupError, match="NoSuchClass"):
        runtime.start()
    assert time.monotonic() - started < 30


def test_client_protocol(combo):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    received = []

    def peer():
        conn, _ = listener.accept()
        with conn:
            received.append(recv_until(conn))
            conn.sendall(b"pong\n")
            received.append(recv_all(conn))

    thread = threading.Thread(target=peer)
    thread.start()
    endpoint = make_client("127.0.0.1", listener.getsockname()[1])
    endpoint.protocol = ObjectRef.of(P + "ClientHello")
    runtime = Runtime([endpoint], workers=1, parallel=combo[0], io=combo[1])
    runtime.start()
    # With no server, the runtime ends by itself once the client is done.
    assert runtime.join(15)
    thread.join(5)
    listener.close()
    assert received == [b"ping\n", b""]


def test_interpreters_host_runs_workers_in_one_process():
    reason = InterpretersHost.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with serving(P + "WhoAmI", ("interpreters", "epoll"), workers=2) as runtime:
        answers = {}
        deadline = time.monotonic() + 10
        while len(answers) < 2 and time.monotonic() < deadline:
            seq, pid, thread = request(runtime, b"?").split()
            answers[seq] = (pid, thread)
        assert set(answers) == {b"1", b"2"}
        pids = {pid for pid, _ in answers.values()}
        threads = {thread for _, thread in answers.values()}
        assert pids == {str(os.getpid()).encode()}
        assert len(threads) == 2


def test_sendfile_missing_file_is_callback_error(combo, tmp_path):
    with serving(P + "SendFile", combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(f"{tmp_path}/missing\n".encode())
            assert recv_all(sock) == b""
        assert runtime.stats()[0]["callback_errors"] == 1
