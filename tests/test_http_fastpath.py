"""PyParallel's http11 fast path on real sockets, in every host and engine."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from .conftest import connect, recv_all, serving

APP = "tests._protocols:FastApp"


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict, bytes]:
    """One response (status line, headers, Content-Length body) from sock."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    buffer[:] = rest[length:]
    return lines[0], headers, rest[:length]


def get(sock, path, buffer, extra=b"", method=b"GET"):
    sock.sendall(method + b" " + path + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
    return read_response(sock, buffer)


def test_routes_and_content_types(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            buffer = bytearray()
            status, headers, body = get(sock, b"/plaintext", buffer)
            assert status == b"HTTP/1.1 200 OK" and body == b"Hello, World!"
            assert headers["content-type"].startswith("text/plain")
            assert headers["server"] == "parallio" and headers["date"].endswith("GMT")
            status, headers, body = get(sock, b"/json", buffer)
            assert json.loads(body) == {"message": "Hello, World!"}
            assert headers["content-type"] == "application/json"
            status, headers, body = get(sock, b"/", buffer)
            assert body == b"<p>index</p>" and headers["content-type"].startswith("text/html")
            status, headers, body = get(sock, b"/echo_header", buffer, b"X-Probe: yes\r\n")
            assert body == b"yes"


def test_not_found_private_and_methods(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            buffer = bytearray()
            for path in (b"/nothing", b"/_private", b"/data_received", b"/handle_request"):
                assert get(sock, path, buffer)[0] == b"HTTP/1.1 404 Not Found"
            status, headers, _ = get(sock, b"/json", buffer, method=b"POST")
            assert status == b"HTTP/1.1 405 Method Not Allowed"
            assert headers["allow"] == "GET, HEAD"
            sock.sendall(b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            # HEAD: Content-Length of the body, no body; the next response follows.
            while b"Hello" not in buffer:
                buffer += sock.recv(65536)
            assert buffer.count(b"Content-Length: 13") == 2
            assert buffer.count(b"Hello, World!") == 1


def test_pipelined_requests_answered_in_order(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            paths = [b"/plaintext", b"/json", b"/", b"/nothing"] * 25
            sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p for p in paths))
            buffer = bytearray()
            for path in paths:
                status, headers, body = read_response(sock, buffer)
                expected = {b"/plaintext": b"Hello, World!", b"/nothing": b"Not Found\n",
                            b"/": b"<p>index</p>"}.get(path)
                if expected is not None:
                    assert body == expected
                else:
                    assert json.loads(body)["message"]


def test_exception_gives_500_and_close_worker_survives(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            buffer = bytearray()
            status, headers, _ = get(sock, b"/boom", buffer)
            assert status == b"HTTP/1.1 500 Internal Server Error"
            assert headers["connection"] == "close"
            assert recv_all(sock) == b""
        with connect(runtime) as sock:
            assert get(sock, b"/plaintext", bytearray())[2] == b"Hello, World!"


def test_keep_alive_rules(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:  # 1.0 without keep-alive: close after
            sock.sendall(b"GET /plaintext HTTP/1.0\r\n\r\n")
            data = recv_all(sock)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!")
        with connect(runtime) as sock:  # 1.0 with keep-alive: stays open
            buffer = bytearray()
            for _ in range(2):
                sock.sendall(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                status, headers, _ = read_response(sock, buffer)
                assert headers["connection"] == "keep-alive"
        with connect(runtime) as sock:  # 1.1 with close
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert recv_all(sock).endswith(b"Hello, World!")


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"400"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"501"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", b"400"),
])
def test_malformed_requests_get_4xx_and_close(combo, raw, status):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(raw)
            data = recv_all(sock)
            assert data.startswith(b"HTTP/1.1 " + status), data[:100]
            assert b"Connection: close" in data
        with connect(runtime) as sock:
            assert get(sock, b"/plaintext", bytearray())[2] == b"Hello, World!"


def test_expect_100_continue(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 4\r\n\r\n")
            assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"body")
            assert read_response(sock, bytearray())[2] == b"Hello, World!"


def test_sendfile_from_handler(combo, tmp_path):
    path = tmp_path / "data.bin"
    payload = os.urandom(2 * 1024 * 1024)
    path.write_bytes(payload)
    with serving(APP, combo) as runtime:
        with connect(runtime, timeout=20) as sock:
            buffer = bytearray()
            for _ in range(2):
                status, headers, body = get(sock, b"/file?" + str(path).encode(), buffer)
                assert body == payload
            assert get(sock, b"/plaintext", buffer)[2] == b"Hello, World!"


def test_slow_header_times_out_with_408(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost:")
            data = recv_all(sock)
            assert data.startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 5


def test_idle_keep_alive_connection_closes(combo):
    with serving(APP, combo) as runtime:
        with connect(runtime) as sock:
            assert get(sock, b"/plaintext", bytearray())[2] == b"Hello, World!"
            started = time.monotonic()
            assert recv_all(sock) == b""
            assert 0.9 < time.monotonic() - started < 10


def test_error_response_survives_unread_pipelined_input(combo):
    """The 400 must reach a client that is still sending: the server closes
    its write side and discards input (lingering close), never resetting
    the connection under the client's unread response."""
    with serving(APP, combo) as runtime:
        for _ in range(5):
            with connect(runtime) as sock:
                sock.sendall(b"BAD REQUEST LINE\r\n\r\n" + b"x" * 200_000)
                data = recv_all(sock)
                assert data.startswith(b"HTTP/1.1 400 "), data[:80]
                assert data.endswith(b"\n")
