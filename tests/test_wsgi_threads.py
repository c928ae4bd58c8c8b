"""WSGI on the workers' thread pools, on real sockets: slow handlers do not
stall the loop, bodies stream both ways with backpressure, file_wrapper
goes out with sendfile, the request timeout answers 503 and abandons the
thread; the TLS and forwarding environ keys."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from parallio import Runtime, protocol_ref
from parallio.http import Limits
from parallio.http.wsgi import WsgiServer
from parallio.tls import TlsConfig, ssl_source

from ._http_client import Client, address_of, encode_request
from .conftest import serving

APP = "tests._wsgi_apps:threaded"


def server(**options) -> WsgiServer:
    return WsgiServer(APP, **options)


def test_a_fast_request_is_answered_while_slow_ones_hold_every_other_thread(combo):
    with serving(server(threads=4), combo) as runtime:
        address = address_of(runtime)
        slow = [Client(address, timeout=10) for _ in range(3)]
        try:
            started = time.monotonic()
            for client in slow:
                client.send(encode_request("GET", "/sleep?seconds=2"))
            time.sleep(0.3)  # the three are in their handlers
            with Client(address) as fast:
                reply = fast.get("/fast")
                answered = time.monotonic() - started
            assert reply.body == b"fast" and answered < 1.5
            for client in slow:
                assert client.read().body == b"slept"
            assert time.monotonic() - started < 4  # they slept side by side, not in turn
        finally:
            for client in slow:
                client.sock.close()


def test_a_request_beyond_the_pool_waits_for_a_thread():
    with serving(server(threads=1), ("threads", "epoll")) as runtime:
        address = address_of(runtime)
        with Client(address, timeout=10) as slow, Client(address, timeout=10) as waiting:
            started = time.monotonic()
            slow.send(encode_request("GET", "/sleep?seconds=1"))
            time.sleep(0.2)
            assert waiting.get("/fast").body == b"fast"
            assert time.monotonic() - started >= 0.9
            assert slow.read().body == b"slept"


def test_the_request_body_streams_with_backpressure(combo):
    total = 48 * 1024 * 1024
    with serving(server(limits=Limits(max_body=total)), combo) as runtime:
        sock = socket.create_connection(address_of(runtime), timeout=20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        sent = [0]

        def upload() -> None:
            sock.sendall(encode_request("POST", "/upload?wait=1.5",
                                        [("Content-Length", str(total))]))
            piece = b"u" * (1 << 20)
            for _ in range(total // len(piece)):
                sock.sendall(piece)
                sent[0] += len(piece)

        sender = threading.Thread(target=upload)
        sender.start()
        time.sleep(1.0)
        # The application has read nothing yet: the server stopped reading,
        # so the client could send only what the buffers on the way hold.
        assert sent[0] < total // 2
        sender.join(30)
        reply = b""
        while not reply.endswith(str(total).encode()):
            chunk = sock.recv(65536)
            assert chunk
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200 OK")


def test_input_reads_and_continue():
    with serving(server(), ("threads", "epoll")) as runtime, \
            Client(address_of(runtime)) as client:
        body = b"one\ntwo\nthree\nfour\nfive"
        reply = client.request("POST", "/lines", [("Content-Type", "text/plain")], body)
        assert json.loads(reply.body) == ["one\n", "two", "\nt", "hree\n", "four\n", "five"]
        # Chunked, in pieces that arrive apart.
        client.send(encode_request("POST", "/upload", [("Transfer-Encoding", "chunked")]))
        for piece in (b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"):
            client.send(piece)
            time.sleep(0.05)
        assert client.read().body == b"11"
        # 100 Continue once the application reads the body.
        client.send(encode_request("POST", "/upload", [("Expect", "100-continue"),
                                                       ("Content-Length", "4")]))
        assert client.read().status == 100
        client.send(b"body")
        assert client.read().body == b"4"
        # An application that answers without reading: no 100, and the
        # connection closes after the answer (the body was never asked for).
        client.send(encode_request("POST", "/fast", [("Expect", "100-continue"),
                                                     ("Content-Length", "4")]))
        reply = client.read()
        assert reply.status == 200 and reply.body == b"fast"
        assert client.closed_by_server()


def test_an_unread_body_is_discarded_before_the_next_request():
    with serving(server(), ("threads", "epoll")) as runtime, \
            Client(address_of(runtime)) as client:
        body = os.urandom(3 * 1024 * 1024)
        client.send(encode_request("POST", "/fast", [("Content-Length", str(len(body)))]) + body
                    + encode_request("GET", "/fast"))
        assert client.read().body == b"fast"
        assert client.read().body == b"fast"


def test_file_wrapper_uses_sendfile(combo, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 3)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with serving(server(), combo) as runtime, Client(address_of(runtime), timeout=20) as client:
        reply = client.get(f"/file?path={path}")
        # The length comes from the file: iterating it would have been chunked.
        assert not reply.chunked and reply.headers["content-length"] == str(len(data))
        assert reply.body == data
        reply = client.get(f"/file?path={path}&skip=100")
        assert reply.body == data[100:]
        reply = client.request("HEAD", f"/file?path={path}")
        assert reply.headers["content-length"] == str(len(data)) and not reply.body
        reply = client.get("/file-like")   # not a regular file: iterated
        assert reply.chunked and reply.body == b"not a file " * 1000


def test_request_timeout_answers_503_and_abandons_the_thread(tmp_path):
    marker = tmp_path / "marker"
    with serving(server(threads=1, request_timeout=0.5), ("threads", "epoll")) as runtime:
        address = address_of(runtime)
        with Client(address, timeout=10) as client:
            started = time.monotonic()
            reply = client.get(f"/sleep?seconds=2.5&marker={marker}")
            assert reply.status == 503 and 0.4 < time.monotonic() - started < 2.4
            assert client.closed_by_server()
        # The one thread is still asleep: a new one serves meanwhile.
        with Client(address, timeout=10) as client:
            assert client.get("/fast").body == b"fast"
        assert not marker.exists()
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "finished\n"   # it ran to its end, unheard
        # A response that had begun is cut.
        with Client(address, timeout=10) as client:
            client.send(encode_request("GET", "/drip?pieces=20&every=0.1"))
            with pytest.raises(ConnectionError):
                client.read()
        with Client(address, timeout=10) as client:
            assert client.get("/fast").body == b"fast"


def test_a_client_that_leaves_stops_the_response(tmp_path):
    marker = tmp_path / "marker"
    with serving(server(), ("threads", "epoll")) as runtime:
        with Client(address_of(runtime), timeout=10) as client:
            client.send(encode_request("GET", f"/drip?pieces=30&every=0.05&marker={marker}"))
            client.sock.recv(100)
        time.sleep(2.5)
        # The generator was stopped (and closed) rather than run to its end.
        assert not marker.exists()


def test_tls_environ(certificates):
    tls = ssl_source(TlsConfig(certificates.server_cert, certificates.server_key,
                               ca_certs=certificates.ca, cert_reqs="optional"))
    with serving(server(), ("threads", "epoll"), tls=tls) as runtime:
        import http.client
        port = address_of(runtime)[1]
        for client_cert in (True, False):
            connection = http.client.HTTPSConnection(
                "localhost", port, timeout=10,
                context=certificates.client_context(client_cert=client_cert))
            connection.request("GET", "/environ")
            environ = json.loads(connection.getresponse().read())
            connection.close()
            assert environ["wsgi.url_scheme"] == "https" and environ["HTTPS"] == "on"
            assert environ["SSL_PROTOCOL"].startswith("TLSv1.")
            assert environ["SSL_TLS_SNI"] == "localhost" and environ["SSL_CIPHER"]
            if client_cert:
                assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
                assert environ["SSL_CLIENT_S_DN"] == "CN=client one,OU=clients,O=parallio tests,C=SE"
                assert environ["SSL_CLIENT_I_DN"] == "CN=parallio test CA,O=parallio tests"
                assert environ["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
            else:
                assert environ["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in environ


def test_forwarded_environ():
    with serving(server(forwarded_allow_ips="127.0.0.1"), ("threads", "epoll")) as runtime, \
            Client(address_of(runtime)) as client:
        environ = json.loads(client.get("/environ", [
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.9"), ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "shop.example:8443")]).body)
        assert environ["REMOTE_ADDR"] == "203.0.113.9" and environ["REMOTE_PORT"] == "0"
        assert environ["wsgi.url_scheme"] == "https" and environ["HTTPS"] == "on"
        assert environ["HTTP_HOST"] == "shop.example:8443"
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("shop.example", "8443")
        assert environ["HTTP_X_FORWARDED_FOR"] == "198.51.100.1, 203.0.113.9"
        environ = json.loads(client.get("/environ", [("Forwarded", "for=192.0.2.7;host=a.b")]).body)
        assert environ["REMOTE_ADDR"] == "192.0.2.7" and environ["SERVER_NAME"] == "a.b"
        assert environ["SERVER_PORT"] == "80"
    with serving(server(forwarded_allow_ips="10.0.0.0/8"), ("threads", "epoll")) as runtime, \
            Client(address_of(runtime)) as client:
        environ = json.loads(client.get("/environ", [("X-Forwarded-For", "203.0.113.9")]).body)
        assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["wsgi.url_scheme"] == "http"


# -- supervision: concurrency limits and drains reach the pool ---------------------

def _runtime(combo, **supervision) -> Runtime:
    from parallio import Supervision
    from parallio.runtime import make_server

    endpoint = make_server("127.0.0.1", 0)
    endpoint.protocol = protocol_ref(server(threads=2))
    host, engine = combo
    return Runtime([endpoint], workers=1, parallel=host, io=engine, drain_timeout=5.0,
                   supervision=Supervision(**supervision))


def test_limit_concurrency_answers_503_beyond_it():
    runtime = _runtime(("threads", "epoll"), limit_concurrency=1)
    runtime.start()
    try:
        address = ("127.0.0.1", runtime.endpoints[0].port)
        with Client(address) as first:
            assert first.get("/fast").status == 200
            with Client(address) as second:
                reply = second.get("/fast")
                assert reply.status == 503 and reply.headers["connection"] == "close"
            assert first.get("/fast").body == b"fast"  # the one within the limit goes on
    finally:
        runtime.stop()


def test_a_drain_lets_the_request_on_a_thread_finish(combo):
    runtime = _runtime(combo)
    runtime.start()
    stopper = None
    try:
        with Client(("127.0.0.1", runtime.endpoints[0].port), timeout=10) as client:
            # Longer than the grace an idle connection gets: only a request
            # known to be in progress outlives it.
            client.send(encode_request("GET", "/sleep?seconds=2.5"))
            time.sleep(0.3)  # in its handler
            stopper = threading.Thread(target=runtime.stop)
            stopper.start()
            assert client.read().body == b"slept"
            answered = time.monotonic()
            # Closed once answered, not when the drain timeout (5 s) ends.
            assert client.closed_by_server() and time.monotonic() - answered < 2
    finally:
        if stopper is None:
            runtime.stop()
        else:
            stopper.join(30)


def test_a_whole_body_read_larger_than_the_high_water_mark(combo):
    """read() of a body far past the 256 KiB at which input pauses: the
    application asked for all of it, so it keeps coming."""
    body = b"b" * (3 * 1024 * 1024)
    with serving(WsgiServer("tests._wsgi_apps:upload_size", threads=2), combo) as runtime:
        with Client(address_of(runtime), timeout=20) as client:
            reply = client.request("POST", "/", body=body)
            assert reply.status == 200 and reply.body == str(len(body)).encode()
