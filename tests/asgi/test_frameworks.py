"""Real applications from PyPI on parallio's ASGI server: the example
Starlette, FastAPI and Django projects, driven by httpx and by the
`websockets` client, on the stdlib loop and on uvloop."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from _serving import LOOPS, running


@pytest.fixture(params=LOOPS)
def loop(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def starlette_app():
    from examples.asgi_starlette_app import app

    return app


@pytest.fixture(scope="module")
def fastapi_app():
    from examples.asgi_fastapi_app import app

    return app


@pytest.fixture(scope="module")
def django_app():
    os.environ["DJANGO_SETTINGS_MODULE"] = "examples.asgi_django.settings"
    from examples.asgi_django.asgi import application

    return application


def test_starlette_routes_lifespan_state_and_streams(starlette_app, loop):
    with running(starlette_app, loop=loop) as server, httpx.Client(base_url=server.url()) as client:
        assert client.get("/").text == "hello from the lifespan"
        first = client.get("/items/7?colour=red").json()
        second = client.get("/items/8").json()
        assert first == {"id": 7, "query": {"colour": "red"}, "hit": first["hit"]}
        assert second["hit"] == first["hit"] + 1  # one lifespan state, shared
        assert client.get("/items/x").status_code == 404
        with client.stream("GET", "/stream?count=100") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.read() == b"".join(b"%d\n" % n for n in range(100))
        body = os.urandom(300_000)
        uploaded = client.post("/upload", content=iter([body[:100_000], body[100_000:]])).json()
        assert uploaded["bytes"] == len(body)
        assert uploaded["pieces"] > 1  # streamed to the application in pieces


@pytest.mark.parametrize("compression", ["deflate", None])
def test_starlette_websocket_echo(starlette_app, loop, compression):
    with running(starlette_app, loop=loop) as server:
        with ws_connect(server.url("/ws", "ws"), compression=compression, open_timeout=5) as ws:
            assert (ws.response.headers.get("sec-websocket-extensions") is not None) == bool(compression)
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\x01" * 40000)
            assert ws.recv(timeout=5) == b"\x00\x01" * 40000
            ws.send(["frag", "mented"])  # a fragmented text message
            assert ws.recv(timeout=5) == "fragmented"
            assert ws.ping(b"are you there").wait(5)
        assert ws.close_code == 1000


def test_websocket_close_codes_and_message_size(loop):
    from parallio.asgi import Config

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[-1] if offered else None,
                    "headers": [(b"x-room", b"lobby")]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                events.append((message["code"], message["reason"]))
                return
            if message.get("text") == "close please":
                await send({"type": "websocket.close", "code": 4001, "reason": "as asked"})
                events.append("closed")
                return
            await send({"type": "websocket.send", "text": message.get("text"),
                        "bytes": message.get("bytes")})

    events = []
    with running(app, Config(ws_max_message_size=1000), loop=loop) as server:
        with ws_connect(server.url("/", "ws"), subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["x-room"] == "lobby"
            ws.send("close please")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
        assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "as asked"
        with ws_connect(server.url("/", "ws"), compression=None) as ws:
            ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009
        with ws_connect(server.url("/", "ws")) as ws:
            ws.close(3123, "bye")
    assert events[0] == "closed"
    assert events[1] == (1009, "message over the 1000-byte limit")
    assert events[2] == (3123, "bye")


def test_websocket_denials(loop):
    from websockets.exceptions import InvalidStatus

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/forbidden":
            await send({"type": "websocket.close"})
        elif scope["path"] == "/teapot":
            await send({"type": "websocket.http.response.start", "status": 418,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "websocket.http.response.body", "body": b"short ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"and stout"})
        else:
            raise RuntimeError("broken before accept")

    with running(app, loop=loop) as server:
        for path, status, body in (("/forbidden", 403, b""), ("/teapot", 418, b"short and stout"),
                                   ("/broken", 500, b"")):
            with pytest.raises(InvalidStatus) as info:
                ws_connect(server.url(path, "ws"), open_timeout=5)
            assert info.value.response.status_code == status
            assert info.value.response.body == body


def test_fastapi_validation_dependency_and_websocket(fastapi_app, loop):
    with running(fastapi_app, loop=loop) as server, httpx.Client(base_url=server.url()) as client:
        ok = client.post("/orders", json={"item": "tea", "quantity": 4}, headers={"x-user": "ann"})
        assert ok.status_code == 200 and ok.json() == {"user": "ann", "item": "tea", "total": 12}
        invalid = client.post("/orders", json={"item": "", "quantity": 0}, headers={"x-user": "ann"})
        assert invalid.status_code == 422
        assert {error["loc"][-1] for error in invalid.json()["detail"]} == {"item", "quantity"}
        assert client.post("/orders", content=b"{not json", headers={
            "x-user": "ann", "content-type": "application/json"}).status_code == 422
        assert client.get("/users/me").status_code == 401
        assert client.get("/users/me", headers={"x-user": "bob"}).json() == {"user": "bob"}
        with ws_connect(server.url("/ws/kitchen", "ws")) as ws:
            ws.send("order up")
            assert json.loads(ws.recv(timeout=5)) == {"room": "kitchen", "echo": "order up"}


def test_django_async_and_sync_views(django_app, loop):
    with running(django_app, loop=loop) as server, httpx.Client(base_url=server.url()) as client:
        response = client.post("/async/?q=find", content=b"payload")
        assert response.json() == {"view": "async", "method": "POST", "q": "find", "body": "payload"}
        hop = client.get("/sync-to-async/?name=ada").json()
        assert hop["name"] == "ada" and hop["thread"] != hop["loop_thread"]
        assert client.get("/sync/").json() == {"view": "sync", "path": "/sync/"}
        assert client.get("/missing/").status_code == 404
