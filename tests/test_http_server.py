"""HttpServer on real sockets in every host and engine: routing, arguments,
methods, HEAD, errors, streamed bodies, pipelining, timeouts."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from parallio.http import HttpServer, Response, route
from parallio._ref import ObjectRef
from parallio.protocol import ProtocolSpec

from ._http_client import Client, address_of, encode_request, h11_exchange
from .conftest import serving
from .test_cli import start_cli, stop

APP = "tests._http_apps:app"


def test_routes_arguments_and_return_types(combo):
    with serving(APP, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/plaintext")
        assert (reply.status, reply.body) == (200, b"Hello, World!")
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert reply.headers["server"] == "parallio" and reply.headers["date"].endswith("GMT")
        reply = client.get("/json")
        assert json.loads(reply.body) == {"message": "Hello, World!"}
        assert reply.headers["content-type"] == "application/json"
        reply = client.get("/")
        assert reply.body == b"<p>index</p>" and reply.headers["content-type"].startswith("text/html")
        # Path parameters, percent-decoded; query fields as keyword arguments.
        assert client.get("/hello/b%C3%B6b?greeting=Hi").body == "Hi, böb!".encode()
        assert client.get("/hello/bob").body == b"Hello, bob!"
        assert json.loads(client.get("/users/42/files/a/b%20c.txt").body) == {
            "user_id": 42, "rest": "a/b c.txt"}
        assert client.get("/users/x/files/a").status == 404  # {user_id:int}
        assert json.loads(client.get("/search?q=fish&limit=3&ignored=1").body) == {
            "q": "fish", "limit": "3"}
        assert json.loads(client.get("/search?q=a&q=b").body)["q"] == "a"  # the first value
        reply = client.get("/search")
        assert reply.status == 400 and b"'q'" in reply.body
        # **kwargs takes every field, except the names of (transport, request).
        assert json.loads(client.get("/anything?a=1&b=&request=x&transport=y").body) == {
            "a": "1", "b": ""}


def test_methods_head_options_and_errors(combo):
    with serving(APP, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.request("POST", "/items", body=b"payload")
        assert json.loads(reply.body) == {"method": "POST", "size": 7, "body": "payload"}
        assert json.loads(client.request("PUT", "/items", body=b"x").body)["method"] == "PUT"
        assert json.loads(client.get("/items").body) == ["a", "b"]
        reply = client.request("DELETE", "/items")
        assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD, OPTIONS, POST, PUT"
        reply = client.request("OPTIONS", "/items")
        assert reply.status == 204 and reply.headers["allow"] == "GET, HEAD, OPTIONS, POST, PUT"
        assert "content-length" not in reply.headers
        for method in ("GET", "PATCH", "BREW"):
            assert client.request(method, "/any").body == method.encode()
        # HEAD runs GET and sends its head only, with the body's length.
        reply = client.request("HEAD", "/plaintext")
        assert reply.status == 200 and reply.headers["content-length"] == "13" and not reply.body
        reply = client.request("HEAD", "/nothing")
        assert reply.status == 404 and not reply.body
        assert client.request("POST", "/plaintext").status == 405
        assert client.get("/nothing").status == 404
        # Prefix routes: the longest prefix wins, exact routes first.
        assert client.get("/api/v1/x").body == b"api:/api/v1/x"
        assert client.get("/api").body == b"api:/api"
        assert client.get("/api/special").body == b"special"
        assert client.get("/apix").status == 404
        reply = client.request("POST", "/created", body=b"x")
        assert (reply.status, reply.body, reply.headers["location"]) == (201, b"made", "/items/1")
        reply = client.get("/teapot")  # HttpError from a handler: its status, still open
        assert reply.status == 418 and "connection" not in reply.headers
        assert client.get("/plaintext").status == 200
        reply = client.get("/boom")
        assert reply.status == 500 and reply.headers["connection"] == "close"
        assert client.closed_by_server()


def test_worker_survives_a_failing_handler(combo):
    with serving(APP, combo) as runtime:
        with Client(address_of(runtime)) as client:
            assert client.get("/boom").status == 500
        with Client(address_of(runtime)) as client:
            assert client.get("/plaintext").body == b"Hello, World!"


def test_http10_and_keep_alive(combo):
    with serving(APP, combo) as runtime:
        with Client(address_of(runtime)) as client:
            reply = client.request("GET", "/plaintext", version="1.0")
            assert reply.body == b"Hello, World!" and reply.headers["connection"] == "close"
            assert client.closed_by_server()
        with Client(address_of(runtime)) as client:
            for _ in range(3):
                reply = client.request("GET", "/json", [("Connection", "keep-alive")], version="1.0")
                assert reply.headers["connection"] == "keep-alive"
        with Client(address_of(runtime)) as client:
            reply = client.request("GET", "/json", [("Connection", "close")])
            assert reply.headers["connection"] == "close" and client.closed_by_server()


def test_streamed_bodies(combo, tmp_path):
    marker = tmp_path / "marker"
    with serving(APP, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get(f"/stream?pieces=5&size=1024&marker={marker}")
        assert reply.chunked and reply.body == (bytes(range(256)) * 4) * 5
        assert reply.headers["content-type"] == "application/x-test"
        # HEAD: the head a GET would get; the body is never produced, but
        # the iterable is still closed.
        reply = client.request("HEAD", f"/stream?marker={marker}")
        assert reply.headers["transfer-encoding"] == "chunked" and not reply.body
        assert client.get("/plaintext").status == 200
        assert marker.read_text().count("closed") == 2, marker.read_text()
        # HTTP/1.0 has no chunks: the body ends with the connection.
        reply = client.request("GET", "/stream?pieces=3&size=256", version="1.0")
        assert not reply.chunked and reply.body == bytes(range(256)) * 3
        assert reply.headers["connection"] == "close"


def test_stream_failures(combo):
    with serving(APP, combo) as runtime:
        with Client(address_of(runtime)) as client:
            # Before anything was sent: a clean 500.
            reply = client.get("/stream-fails?after=0")
            assert reply.status == 500 and client.closed_by_server()
        with Client(address_of(runtime)) as client:
            # After part of it went out: the connection is cut, so the
            # client cannot mistake a truncated body for a whole one.
            client.send(encode_request("GET", "/stream-fails?after=20000"))
            with pytest.raises((ConnectionError, ValueError)):
                client.read()
        with Client(address_of(runtime)) as client:
            assert client.get("/plaintext").status == 200


def test_pipelined_requests_wait_for_a_stream(combo):
    with serving(APP, combo) as runtime, Client(address_of(runtime), timeout=20) as client:
        paths = ["/plaintext", "/stream?pieces=64&size=65536", "/json",
                 "/stream?pieces=2&size=256", "/hello/x", "/nothing"] * 3
        client.send(b"".join(encode_request("GET", path) for path in paths))
        for path in paths:
            reply = client.read()
            if path.startswith("/stream"):
                pieces, size = (int(part.split("=")[1]) for part in path.split("?")[1].split("&"))
                assert len(reply.body) == pieces * size
            elif path == "/nothing":
                assert reply.status == 404
            else:
                assert reply.status == 200


def test_large_stream_to_a_slow_reader_is_produced_as_read(combo, tmp_path):
    marker = tmp_path / "marker"
    pieces = 2048  # 128 MiB in 64 KiB pieces
    with serving(APP, combo) as runtime:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(20)
        sock.connect(address_of(runtime))
        with sock:
            sock.sendall(encode_request("GET", f"/stream?pieces={pieces}&size=65536"
                                               f"&marker={marker}"))
            time.sleep(0.5)
            # The client reads nothing: the server stops producing after
            # its send queue and the socket buffers are full.
            produced = marker.read_text().count("piece")
            assert produced * 16 < pieces // 4
            received = 0
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received += len(data)
                if data.endswith(b"0\r\n\r\n"):
                    break
            assert received > pieces * 65536
        # The end can reach the client a moment before the worker calls
        # close() (epoll writes inline): wait for it, boundedly.
        deadline = time.monotonic() + 5
        while "closed" not in marker.read_text():
            assert time.monotonic() < deadline, "the body's close() was not called"
            time.sleep(0.01)


def test_slow_header_gets_408_and_idle_connection_closes(combo):
    with serving(APP, combo) as runtime:
        with Client(address_of(runtime)) as client:
            started = time.monotonic()
            client.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Slow:")
            reply = client.read()
            assert reply.status == 408 and reply.headers["connection"] == "close"
            assert time.monotonic() - started < 5
        with Client(address_of(runtime)) as client:
            # Slowloris: a byte every 50 ms keeps the connection busy but
            # never finishes the head; the timeout counts from its first byte.
            started = time.monotonic()
            with pytest.raises(OSError):
                for byte in b"GET /plaintext HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * 100:
                    client.send(bytes([byte]))
                    time.sleep(0.05)
            assert time.monotonic() - started < 5
        with Client(address_of(runtime)) as client:
            assert client.get("/plaintext").status == 200
            started = time.monotonic()
            assert client.closed_by_server()
            assert 0.9 < time.monotonic() - started < 5


def test_responses_parse_with_h11(combo):
    with serving(APP, combo) as runtime:
        address = address_of(runtime)
        for method, target, body in [("GET", "/json", b""), ("POST", "/items", b"abc"),
                                     ("GET", "/stream?pieces=3", b""), ("HEAD", "/stream", b""),
                                     ("GET", "/nothing", b""), ("DELETE", "/items", b"")]:
            response, data = h11_exchange(address, method, target, body=body)
            assert response.status_code in (200, 404, 405)
            if target == "/stream?pieces=3":
                assert data == bytes(range(256)) * 12


@pytest.mark.parametrize("target", ["tests._http_apps:Classic", "tests._http_apps:classic",
                                    "tests._http_apps:MoreClassic"])
def test_subclass_flavour(target):
    with serving(target, ("threads", "epoll")) as runtime, Client(address_of(runtime)) as client:
        expected = b"overridden" if target.endswith("MoreClassic") else b"Hello, World!"
        assert client.get("/plaintext").body == expected
        assert client.get("/").body == b"<p>classic</p>"
        assert client.get("/greet/al").body == b"hi al"
        assert client.get("/helper").status == 404  # undecorated methods are not routes


def test_subclass_in_every_host(combo):
    with serving("tests._http_apps:classic", combo) as runtime, \
            Client(address_of(runtime)) as client:
        assert client.get("/greet/al").body == b"hi al"


# -- the route table, without sockets -----------------------------------------------

module_app = HttpServer()


def test_module_level_instance_is_named_by_import_path():
    assert ObjectRef.of(module_app).path == f"{__name__}:module_app"
    local = HttpServer()
    with pytest.raises(ValueError, match="module level"):
        ObjectRef.of(local)


def test_registered_objects_become_protocol_classes():
    spec = ProtocolSpec.of(module_app)
    assert spec.cls is module_app.protocol_class
    from ._http_apps import Classic

    assert ProtocolSpec.of(Classic).cls.app.__class__ is Classic


def test_route_table_rejects_mistakes():
    server = HttpServer()

    @server.route("/a")
    def first(transport, request):
        return b""

    with pytest.raises(ValueError, match="has a handler"):
        server.route("/a")(first)
    with pytest.raises(TypeError, match="no parameter for path parameter"):
        server.route("/b/{x}")(first)
    with pytest.raises(TypeError, match="takes"):
        server.route("/c")(lambda request: b"")
    with pytest.raises(ValueError, match="starts with"):
        server.route("relative")(first)
    with pytest.raises(ValueError, match="parameters look like"):
        server.route("/d/{x:float}")(lambda transport, request, x: b"")
    with pytest.raises(ValueError, match="invalid method"):
        server.route("/e", methods=["GET POST"])
    with pytest.raises(ValueError, match="set by the server"):
        Response(b"", headers=[("Content-Length", "3")])
    with pytest.raises(ValueError):
        Response(b"", headers=[("X-Bad", "a\r\nb")])
    with pytest.raises(ValueError, match="no body"):
        Response(b"x", status=304)
    server.protocol_class
    with pytest.raises(RuntimeError, match="once the server is serving"):
        server.route("/late")(first)


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError):
        HttpServer(idle_timeout=0)


class _Sub(HttpServer):
    @route("/x", methods="POST")
    def x(self, transport, request):
        return b""


def test_subclass_routes_are_collected():
    server = _Sub()
    assert server._exact["/x"].allow == "OPTIONS, POST"


def test_client_that_stops_reading_is_cut_after_the_idle_timeout(combo, tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("")
    with serving(APP, combo) as runtime:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(address_of(runtime))
        with sock:
            sock.sendall(encode_request("GET", f"/stream?pieces=100000&size=65536&marker={marker}"))
            # Never read: after idle_timeout (1 s) without progress the
            # server drops the connection and closes the body's iterable.
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and "closed" not in marker.read_text():
                time.sleep(0.1)
            assert "closed" in marker.read_text()


def test_requests_held_during_a_stream_are_bounded(combo):
    pieces = 512  # a 32 MiB stream
    with serving("tests._http_apps:patient", combo) as runtime, \
            Client(address_of(runtime), timeout=20) as client:
        client.send(encode_request("GET", f"/stream?pieces={pieces}&size=65536"))
        # 2 MiB of pipelined requests sent while the stream runs.
        count = 2 * 1024 * 1024 // 40
        flood = encode_request("GET", "/plaintext") * count

        def send_flood():
            try:
                client.send(flood)
            except OSError:
                pass  # the server closed: expected once it has had enough

        sender = threading.Thread(target=send_flood)
        sender.start()
        time.sleep(0.3)
        assert len(client.read().body) == pieces * 65536
        # Two outcomes are right, depending on how much of the flood the
        # server read while its output was backed up: past HOLD_LIMIT it
        # answers none and closes after the stream; under it, the rest
        # stayed in the kernel's buffers (bounded too) and every pipelined
        # request is answered in order after the stream.
        try:
            first = client.read()
        except ConnectionError:
            pass
        else:
            assert first.body == b"Hello, World!"
            for _ in range(count - 1):
                assert client.read().body == b"Hello, World!"
        sender.join(20)


def test_serve_command_takes_a_module_level_server():
    process, port = start_cli("serve", APP, "--workers", "1", "--io", "epoll")
    try:
        with Client(("127.0.0.1", port)) as client:
            assert client.get("/hello/cli").body == b"Hello, cli!"
    finally:
        code, err = stop(process)
    assert code == 0, err
