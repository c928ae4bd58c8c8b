"""parallio's ASGI HTTP/1.1 server over real sockets, on the stdlib loop
and on uvloop, with raw ASGI applications (no framework in the way)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import h11
import pytest

from parallio.asgi import ClientDisconnected, Config, LifespanFailure

from _serving import LOOPS, running


@pytest.fixture(params=LOOPS)
def loop(request) -> str:
    return request.param


def read_responses(sock: socket.socket, count: int, methods: list[str] | None = None) -> list[tuple]:
    """``count`` responses parsed by h11, as (status, headers, body,
    trailers); ``methods`` are those of the requests sent (GET by default)."""
    conn = h11.Connection(h11.CLIENT)
    responses = []
    for index in range(count):
        method = methods[index] if methods else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        current, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                current = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                responses.append((current.status_code,
                                  [(k.decode(), v.decode()) for k, v in current.headers], body,
                                  [(k.decode(), v.decode()) for k, v in event.headers]))
                break
            elif isinstance(event, h11.ConnectionClosed):
                return responses
        if conn.their_state is not h11.DONE or conn.our_state is not h11.DONE:
            break
        conn.start_next_cycle()
    return responses


def exchange(server, raw: bytes) -> bytes:
    with server.connect() as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def header(headers: list, name: str):
    values = [v for k, v in headers if k.lower() == name]
    return values[0] if values else None


async def scope_echo(scope, receive, send):
    """Answers with the scope as JSON (bytes as latin-1 text)."""
    if scope["type"] == "lifespan":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message)
        if not message.get("more_body"):
            break
    shown = {key: value for key, value in scope.items() if key not in ("state",)}
    shown["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    shown["raw_path"] = scope["raw_path"].decode("latin-1")
    shown["query_string"] = scope["query_string"].decode("latin-1")
    shown["pieces"] = [len(m["body"]) for m in chunks]
    shown["more"] = [m["more_body"] for m in chunks]
    body = json.dumps(shown).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_scope_is_complete(loop):
    with running(scope_echo, Config(root_path="/mount"), loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /caf%C3%A9/x%2Fy?q=%20a&b HTTP/1.1\r\nHost: example.com\r\n"
                         b"X-Dup: 1\r\nX-Dup: 2\r\nUser-Agent: t\xe9st\r\n\r\n")
            ((status, headers, body, _),) = read_responses(sock, 1)
            local = sock.getsockname()
            peer = sock.getpeername()
    assert status == 200
    scope = json.loads(body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/café/x/y"
    assert scope["raw_path"] == "/mount/caf%C3%A9/x%2Fy"
    assert scope["query_string"] == "q=%20a&b"
    assert scope["headers"] == [["host", "example.com"], ["x-dup", "1"], ["x-dup", "2"],
                                ["user-agent", "t\xe9st"]]
    assert scope["client"] == list(local)
    assert scope["server"] == list(peer)
    assert set(scope["extensions"]) == {"http.response.pathsend", "http.response.trailers"}


def test_header_whitespace_is_trimmed_and_trailers_stay_out_of_the_headers(loop):
    with running(scope_echo, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: \t value \t\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\nX-Trailer: t\r\n\r\n")
            ((_, _, body, _),) = read_responses(sock, 1)
    assert json.loads(body)["headers"] == [["host", "x"], ["x-pad", "value"],
                                           ["transfer-encoding", "chunked"]]


def test_request_body_in_pieces_with_more_body(loop):
    config = Config(body_chunk_size=1000)
    with running(scope_echo, config, loop=loop) as server:
        with server.connect() as sock:
            body = b"x" * 2500
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"9c4\r\n" + body + b"\r\n0\r\n\r\n")
            ((status, _, response, _),) = read_responses(sock, 1)
    scope = json.loads(response)
    assert scope["pieces"] == [1000, 1000, 500]
    assert scope["more"] == [True, True, False]


def test_empty_body_is_one_event(loop):
    with running(scope_echo, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            ((_, _, response, _),) = read_responses(sock, 1)
    assert json.loads(response)["pieces"] == [0]


async def streaming(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "trailers": scope["path"] == "/trailers",
                "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")]})
    for piece in (b"one ", b"", b"two ", b"three"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if scope["path"] == "/trailers":
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1")]})


def test_streamed_response_is_chunked(loop):
    with running(streaming, loop=loop) as server:
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


def test_trailers_only_when_the_client_accepts_them(loop):
    with running(streaming, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"
                         b"GET /trailers HTTP/1.1\r\nHost: x\r\n\r\n")
            (_, _, body, trailers), (_, _, body2, trailers2) = read_responses(sock, 2)
    assert body == body2 == b"one two three"
    assert trailers == [("x-checksum", "abc"), ("x-more", "1")]
    assert trailers2 == []


def test_http_1_0_stream_is_delimited_by_close(loop):
    with running(streaming, loop=loop) as server:
        raw = exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"one two three"


def test_head_drops_the_body_and_keeps_the_length(loop):
    with running(scope_echo, loop=loop) as server:
        raw = exchange(server, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, second = raw.split(b"HTTP/1.1 200 OK")[1:]
    assert b"Content-Length: " in first and first.endswith(b"\r\n\r\n")
    assert b"Connection: close" in second


def test_pipelined_requests_are_answered_in_order(loop):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        delay = float(scope["query_string"] or 0)
        await asyncio.sleep(delay)
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with running(app, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"".join(b"GET /%d?%s HTTP/1.1\r\nHost: x\r\n\r\n"
                                  % (i, b"0.05" if i % 3 == 0 else b"") for i in range(20)))
            responses = read_responses(sock, 20)
    assert [body for _, _, body, _ in responses] == [b"/%d" % i for i in range(20)]


def test_expect_100_continue(loop):
    with running(scope_echo, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"hello")
            ((status, _, body, _),) = read_responses(sock, 1)
    assert status == 200 and json.loads(body)["pieces"] == [5]


@pytest.mark.parametrize("value", [b"a\r\nSet-Cookie: evil=1", b"a\nb", b"a\rb", b"a\x00b", b"a\x7fb"])
def test_app_header_values_with_controls_are_a_500_not_a_split(loop, value):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", value)]})
        await send({"type": "http.response.body", "body": b"never"})

    with running(app, loop=loop) as server:
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in raw and b"never" not in raw and b"x-bad" not in raw


def test_app_errors_before_and_after_the_response_started(loop, caplog):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/before":
            raise ValueError("boom before")
        if scope["path"] == "/returns":
            return
        if scope["path"] == "/start-only":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ValueError("boom after a start that was never written")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom after")

    with running(app, loop=loop) as server:
        for path in (b"/before", b"/returns", b"/start-only"):
            raw = exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            assert raw.startswith(b"HTTP/1.1 500 "), raw
            assert b"Connection: close" in raw
        raw = exchange(server, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 ") and b"partial" in raw
        assert not raw.endswith(b"0\r\n\r\n")  # cut, not completed
        # Requests pipelined behind a failure are not served: the 500 closes.
        raw = exchange(server, b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /returns HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.count(b"HTTP/1.1 500 ") == 1
        # The server lives on.
        raw = exchange(server, b"GET /returns HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 500 ")
    assert "boom before" in caplog.text and "boom after" in caplog.text


def test_content_length_mismatch_cuts_the_connection(loop):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        if scope["path"] == "/streamed-short":
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body",
                        "body": b"12345" if scope["path"] == "/short" else b"x" * 11})

    with running(app, loop=loop) as server:
        # Found out before anything was written: a whole 500.
        for path in (b"/short", b"/long"):
            raw = exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            assert raw.startswith(b"HTTP/1.1 500 ")
        # Found out after: the connection is cut.
        raw = exchange(server, b"GET /streamed-short HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"12345")


def test_request_timeout_is_a_503_or_a_cut(loop):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/started":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        await asyncio.sleep(60)

    with running(app, Config(request_timeout=0.5), loop=loop) as server:
        started = time.monotonic()
        raw = exchange(server, b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 5
        raw = exchange(server, b"GET /started HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 ") and not raw.endswith(b"0\r\n\r\n")


def test_disconnect_is_delivered_and_send_raises(loop):
    seen = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append(await receive())
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        except ClientDisconnected as error:
            seen.append(type(error))
            assert isinstance(error, OSError)

    with running(app, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == [{"type": "http.disconnect"}, ClientDisconnected]


def test_receive_after_the_response_says_disconnect(loop):
    result = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        result.append(await asyncio.wait_for(receive(), 5))

    with running(app, loop=loop) as server:
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 204 ") and b"Content-Length" not in raw
    assert result == [{"type": "http.disconnect"}]


def test_pathsend(loop, tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/octet-stream")]
        if scope["path"] == "/sized":
            headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})

    with running(app, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"HEAD /sized HTTP/1.1\r\nHost: x\r\n\r\n")
            responses = read_responses(sock, 3, ["GET", "GET", "HEAD"])
        assert [body for _, _, body, _ in responses] == [data, data, b""]
        assert header(responses[0][1], "content-length") == str(len(data))
        assert header(responses[1][1], "transfer-encoding") == "chunked"


def test_keep_alive_idle_timeout_and_header_timeout(loop):
    with running(scope_echo, Config(idle_timeout=0.5, header_timeout=0.5), loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_responses(sock, 1)[0][0] == 200
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed when idle
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost")
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")


def test_malformed_request_is_refused_and_the_server_lives_on(loop):
    with running(scope_echo, loop=loop) as server:
        assert exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n").startswith(
            b"HTTP/1.1 400 ")
        assert exchange(server, b"\x16\x03\x01\x00").startswith(b"HTTP/1.1 400 ")
        # A bad request pipelined behind a good one is refused after it.
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9.9\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 505 " in raw


def test_app_connection_close_and_server_headers(loop):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"close"), (b"server", b"mine"),
                                (b"date", b"yesterday"), (b"transfer-encoding", b"gzip"),
                                (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with running(app, loop=loop) as server:
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200") == 1
    head = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"server: mine" in head and b"Server: parallio" not in head
    assert b"date: yesterday" in head and not any(line.startswith(b"Date:") for line in head)
    assert b"transfer-encoding: gzip" not in head and b"Connection: close" in head


def test_lifespan_state_reaches_every_request(loop):
    events = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["pool"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        scope["state"]["scribble"] = True  # a copy: the next request does not see it
        body = json.dumps(sorted(scope["state"])).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with running(app, loop=loop) as server:
        assert events == ["lifespan.startup"]
        for _ in range(2):
            raw = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.endswith(b'["pool", "scribble"]\r\n0\r\n\r\n')
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_failing_startup_stops_the_server_with_the_apps_message(loop):
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})

    with pytest.raises(LifespanFailure, match="database unreachable"):
        with running(app, loop=loop):
            pass


def test_lifespan_auto_serves_apps_without_it_and_on_refuses_them(loop):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan here")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    with running(app, loop=loop) as server:
        assert exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"served\r\n0\r\n\r\n")
    with pytest.raises(LifespanFailure, match="no lifespan here"):
        with running(app, Config(lifespan="on"), loop=loop):
            pass


def test_shutdown_lets_the_response_in_progress_finish(loop):

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"finished"})

    sock = None
    with running(app, loop=loop) as server:
        sock = server.connect(timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 ") and b"finished" in data


def test_an_upgrade_to_another_protocol_is_served_as_http(loop):
    with running(scope_echo, loop=loop) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                         b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            responses = read_responses(sock, 2)
    assert [json.loads(body)["path"] for _, _, body, _ in responses] == ["/first", "/second"]


def test_a_bad_websocket_handshake_is_refused(loop):
    with running(scope_echo, loop=loop) as server:
        raw = exchange(server, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13\r\n" in raw
