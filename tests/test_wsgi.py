"""WSGI (PEP 3333) on real sockets in every host and engine: the environ,
start_response, streaming, close(), errors; wsgiref's validator and a real
Flask application; the fallback from isolated interpreters to processes."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time

import pytest

from parallio import Runtime
from parallio.host import choose_host
from parallio.http.wsgi import WsgiServer
from parallio._ref import ObjectRef
from parallio.runtime import make_server

from ._http_client import Client, address_of, encode_request, h11_exchange
from .conftest import serving
from .test_cli import start_cli, stop

#: Found by import path, as any module-level server (the application object
#: itself, wrapped in wsgiref's validator).
BY_PATH = "tests._wsgi_apps:wsgi_server"


def by_value() -> WsgiServer:
    """Sent to workers by value; each imports the application itself."""
    return WsgiServer("tests._wsgi_apps:validated", header_timeout=0.5, idle_timeout=1.0)


def test_environ(combo):
    with serving(BY_PATH, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/environ?x=1&y=%20", [("X-Custom", "a"), ("X-Custom", "b"),
                                                   ("Cookie", "c=1"), ("Cookie", "d=2"),
                                                   ("X_Forged", "no"), ("Content-Type", "text/x")])
        environ = json.loads(reply.body)
        port = address_of(runtime)[1]
        assert environ["REQUEST_METHOD"] == "GET"
        assert environ["SCRIPT_NAME"] == "" and environ["PATH_INFO"] == "/environ"
        assert environ["QUERY_STRING"] == "x=1&y=%20"
        assert environ["REQUEST_URI"] == "/environ?x=1&y=%20"
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", str(port))
        assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["REMOTE_PORT"].isdigit()
        assert environ["HTTP_HOST"] == "test"
        assert environ["HTTP_X_CUSTOM"] == "a, b" and environ["HTTP_COOKIE"] == "c=1; d=2"
        assert environ["CONTENT_TYPE"] == "text/x" and "HTTP_CONTENT_TYPE" not in environ
        assert not any("FORGED" in key for key in environ)
        assert environ["wsgi.version"] == [1, 0] and environ["wsgi.url_scheme"] == "http"
        assert environ["wsgi.input_terminated"] is True and environ["wsgi.run_once"] is False
        assert environ["wsgi.multithread"] is True   # the pool's threads
        assert environ["wsgi.multiprocess"] is (combo[0] != "threads")


def test_path_info_is_latin1_bytes(combo):
    with serving(BY_PATH, combo) as runtime, Client(address_of(runtime)) as client:
        # PEP 3333: the percent-decoded bytes, as latin-1 text.
        environ = json.loads(client.get("/environ?x").body)
        assert environ["PATH_INFO"] == "/environ"
        reply = client.get("/caf%C3%A9%2Fx")
        assert reply.status == 404 and reply.body == "no such path: /caf\xc3\xa9/x\n".encode("latin-1")


def test_input_bodies(combo):
    with serving(BY_PATH, combo) as runtime, Client(address_of(runtime)) as client:
        assert client.request("POST", "/echo", body=b"hello world").body == b"hello world"
        chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        reply = client.request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked)
        assert reply.body == b"hello world"
        assert client.request("POST", "/echo").body == b""
        assert client.request("POST", "/lines", body=b"a\nb\nc").body == b"3 lines\n"
        body = bytes(range(256)) * 1000
        assert client.request("POST", "/echo", body=body).body == body
        # Expect: 100-continue, then the body.
        client.send(encode_request("POST", "/echo", [("Expect", "100-continue"),
                                                     ("Content-Length", "4")]))
        assert client.read().status == 100
        client.send(b"body")
        assert client.read().body == b"body"


def test_start_response_and_framing(combo):
    with serving(by_value(), combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/environ")
        assert not reply.chunked and reply.headers["content-length"] == str(len(reply.body))
        reply = client.get("/stream?pieces=3&size=512")
        assert reply.chunked and reply.body == bytes(range(256)) * 6
        reply = client.get("/sized?pieces=3&size=512")
        assert not reply.chunked and reply.headers["content-length"] == "1536"
        reply = client.get("/write")
        assert reply.body == b"written then returned"
        reply = client.get("/many-writes")  # more pieces than one gather-send takes
        assert reply.body == b"".join(b"%d," % number for number in range(3000))
        reply = client.get("/late-start")
        assert (reply.status, reply.body, reply.headers["x-late"]) == (202, b"late body", "yes")
        reply = client.get("/exc-info")  # headers replaced before anything was sent
        assert (reply.status, reply.body) == (503, b"recovered")
        reply = client.get("/empty")
        assert reply.status == 204 and "content-length" not in reply.headers
        reply = client.get("/not-modified")
        assert reply.status == 304 and reply.headers["etag"] == '"x"'
        reply = client.request("HEAD", "/sized?pieces=2&size=256")
        assert reply.headers["content-length"] == "512" and not reply.body
        reply = client.request("HEAD", "/stream")
        assert reply.headers["transfer-encoding"] == "chunked"
        reply = client.request("GET", "/stream?pieces=2&size=256", version="1.0")
        assert reply.body == bytes(range(256)) * 2 and reply.headers["connection"] == "close"
    with serving(by_value(), combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/connection-close")
        assert reply.body == b"bye" and reply.headers["connection"] == "close"
        assert client.closed_by_server()


@pytest.mark.parametrize("path", ["/error", "/bad-header", "/hop", "/stream?fail_after=0"])
def test_errors_are_500(path):
    with serving(by_value(), ("threads", "epoll")) as runtime:
        with Client(address_of(runtime)) as client:
            reply = client.get(path)
            assert reply.status == 500 and reply.headers["connection"] == "close"
            assert b"Injected" not in reply.body and client.closed_by_server()
        with Client(address_of(runtime)) as client:
            assert client.get("/environ").status == 200


def test_exc_info_after_the_body_began():
    # start_response(exc_info) re-raises once body bytes were handed over:
    # a 500 if they had not reached the socket yet, else a cut connection.
    with serving(by_value(), ("threads", "epoll")) as runtime:
        with Client(address_of(runtime)) as client:
            client.send(encode_request("GET", "/exc-info-late"))
            try:
                reply = client.read()
            except ConnectionError:
                pass
            else:
                assert reply.status == 500 and b"never" not in reply.body


def test_errors_in_every_host(combo):
    with serving(by_value(), combo) as runtime:
        with Client(address_of(runtime)) as client:
            assert client.get("/error").status == 500
        with Client(address_of(runtime)) as client:
            # A body that fails after part of it was sent: the connection is cut.
            client.send(encode_request("GET", "/stream?pieces=100&size=65536&fail_after=50"))
            with pytest.raises(ConnectionError):
                client.read()
        # A body that does not match its Content-Length: a 500 if noticed
        # before anything was sent (the first piece is too long)...
        with Client(address_of(runtime)) as client:
            reply = client.get("/sized?pieces=4&size=1024&declared=100")
            assert reply.status == 500
        # ... a body that ends short is noticed at its end, when part of it
        # may be out already: a 500 or a cut connection, never a 200.
        with Client(address_of(runtime)) as client:
            client.send(encode_request("GET", "/sized?pieces=4&size=1024&declared=5000"))
            try:
                assert client.read().status == 500
            except ConnectionError:
                pass
        # ... else a cut connection.
        for declared in (1_000_000, 7_000_000):
            with Client(address_of(runtime)) as client:
                client.send(encode_request("GET", f"/sized?pieces=100&size=65536&declared={declared}"))
                with pytest.raises(ConnectionError):
                    client.read()
        with Client(address_of(runtime)) as client:
            assert client.get("/environ").status == 200


def test_close_is_always_called(combo, tmp_path):
    marker = tmp_path / "marker"
    with serving(by_value(), combo) as runtime:
        with Client(address_of(runtime)) as client:
            client.get(f"/stream?marker={marker}")  # the whole body
            client.request("HEAD", f"/stream?marker={marker}")  # the head only
            client.send(encode_request("GET", f"/stream?marker={marker}&fail_after=1"))
            try:  # an error after the first piece: a cut connection...
                assert client.read().status == 500  # ...or a 500 if nothing was out yet
            except ConnectionError:
                pass
        with Client(address_of(runtime)) as client:
            # The client goes away in the middle of a large body.
            client.send(encode_request("GET", f"/stream?pieces=10000&size=65536&marker={marker}"))
            client.sock.recv(1000)
        deadline = time.monotonic() + 5
        while marker.read_text().count("closed") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text().count("closed") == 4


def test_large_body_streams_in_bounded_memory(combo, tmp_path):
    marker = tmp_path / "marker"
    pieces = 2048  # 128 MiB in 64 KiB pieces
    with serving(by_value(), combo) as runtime:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(20)
        sock.connect(address_of(runtime))
        with sock:
            sock.sendall(encode_request("GET", f"/stream?pieces={pieces}&size=65536&marker={marker}"))
            time.sleep(0.5)
            assert marker.read_text().count("piece") * 16 < pieces // 4
            received = 0
            while not received or not data.endswith(b"0\r\n\r\n"):
                data = sock.recv(1 << 20)
                assert data
                received += len(data)
            assert received > pieces * 65536


def test_pipelined_requests_after_streams(combo):
    with serving(by_value(), combo) as runtime, Client(address_of(runtime), timeout=20) as client:
        paths = ["/environ", "/stream?pieces=40&size=65536", "/write", "/late-start"] * 3
        client.send(b"".join(encode_request("GET", path) for path in paths))
        for path in paths:
            reply = client.read()
            assert reply.status in (200, 202), path
            if path.startswith("/stream"):
                assert len(reply.body) == 40 * 65536


def test_responses_parse_with_h11(combo):
    with serving(by_value(), combo) as runtime:
        for method, target in [("GET", "/stream?pieces=2"), ("GET", "/sized"), ("HEAD", "/stream"),
                               ("GET", "/empty"), ("GET", "/write")]:
            response, data = h11_exchange(address_of(runtime), method, target)
            assert response.status_code in (200, 204)


# -- Flask ----------------------------------------------------------------------------

FLASK = "examples.wsgi_flask_app:app"


def test_flask_application(combo):
    pytest.importorskip("flask")
    with serving(WsgiServer(FLASK), combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/")
        assert reply.status == 200 and reply.body == b"Hello from Flask on parallio"
        assert json.loads(client.get("/json?name=ann").body) == {"hello": "ann"}
        reply = client.request("POST", "/echo", [("Content-Type", "application/octet-stream")],
                               b"\x00\x01raw")
        assert reply.body == b"\x00\x01raw"
        reply = client.request("POST", "/form", [("Content-Type", "application/x-www-form-urlencoded")],
                               b"name=J%C3%BCrgen&x=1")
        assert reply.body == "Jürgen".encode()
        reply = client.get("/stream?n=5")
        assert reply.chunked and reply.body == b"0\n1\n2\n3\n4\n"
        reply = client.get("/cookie", [("Cookie", "flavour=ginger")])
        assert json.loads(reply.body) == {"flavour": "ginger"}
        assert "visited=yes" in reply.headers["set-cookie"]
        assert client.get("/missing").status == 404
        assert client.request("DELETE", "/").status == 405
        reply = client.get("/error")  # Flask turns the exception into its own 500
        assert reply.status == 500
        assert client.get("/").status == 200


# -- choosing the host ----------------------------------------------------------------

def test_by_value_ref_names_the_application_module():
    ref = ObjectRef.of(WsgiServer("tests._wsgi_no_subinterpreters:app"))
    assert ref.path == "tests._wsgi_no_subinterpreters:app" and ref.by_value
    with pytest.raises(ValueError):
        WsgiServer("no_colon")
    with pytest.raises(TypeError):
        WsgiServer(42)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="isolated interpreters need 3.13+")
def test_auto_falls_back_to_processes_and_says_why(caplog):
    endpoint = make_server("127.0.0.1", 0)
    endpoint.protocol = ObjectRef.of(WsgiServer("tests._wsgi_no_subinterpreters:app"))
    with caplog.at_level(logging.INFO, logger="parallio"):
        runtime = Runtime([endpoint], workers=1, parallel="auto", io="epoll")
    assert runtime.host.name == "processes"
    assert "does not import in an isolated subinterpreter" in caplog.text
    assert "refuses subinterpreters" in caplog.text
    with runtime, Client(address_of(runtime)) as client:
        assert client.get("/").body == b"served by a process"
    # An application that does import there gets isolated interpreters.
    assert choose_host("auto", ["examples.wsgi_flask_app"], None)[0].name == "interpreters"


def test_wsgi_command():
    pytest.importorskip("flask")
    process, port = start_cli("wsgi", FLASK, "--workers", "2", "--io", "epoll")
    try:
        with Client(("127.0.0.1", port)) as client:
            assert client.get("/").body == b"Hello from Flask on parallio"
            assert json.loads(client.get("/json?name=cli").body) == {"hello": "cli"}
    finally:
        code, err = stop(process)
    assert code == 0, err
