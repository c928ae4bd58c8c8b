"""The raw ASGI application both servers run in the differential tests.

Each route exercises one part of the protocol. What the application saw of
a client that went away is recorded under ``?tag=`` and read back from
``/events?tag=`` on a later connection, so disconnects can be compared too.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs


class DifferentialApp:
    def __init__(self) -> None:
        self.events: dict[str, list] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        query = {key: values[0] for key, values in
                 parse_qs(scope["query_string"].decode("latin-1")).items()}
        path = scope["path"]
        handler = getattr(self, "route_" + path.strip("/").split("/")[0].replace("-", "_"), None)
        if handler is None:
            await self.respond(send, 404, b"no route " + path.encode("utf-8", "replace"))
            return
        await handler(scope, receive, send, query)

    @staticmethod
    async def respond(send, status: int, body: bytes, headers: list | None = None) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body)), *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def read_body(receive) -> tuple[bytes, int]:
        body, pieces = b"", 0
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            body += message.get("body", b"")
            pieces += 1
            if not message.get("more_body", False):
                return body, pieces

    async def route_plain(self, scope, receive, send, query):
        await self.respond(send, 200, b"Hello, World!")

    async def route_echo(self, scope, receive, send, query):
        body, _ = await self.read_body(receive)
        shown = {
            "method": scope["method"], "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "root_path": scope.get("root_path", ""), "http_version": scope["http_version"],
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode("latin-1"),
        }
        await self.respond(send, 200, json.dumps(shown, sort_keys=True).encode(),
                           [(b"content-type", b"application/json")])

    async def route_status(self, scope, receive, send, query):
        status = int(scope["path"].split("/")[2])
        if status in (204, 304):
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await self.respond(send, status, b"status %d" % status)

    async def route_stream(self, scope, receive, send, query):
        count = int(query.get("n", "3"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for index in range(count):
            await send({"type": "http.response.body", "body": b"piece %d\n" % index,
                        "more_body": True})
            if "sleep" in query:
                await asyncio.sleep(float(query["sleep"]))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def route_stream_sized(self, scope, receive, send, query):
        pieces = [b"a" * 10, b"b" * 20, b"c" * 30]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"60")]})
        for index, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece,
                        "more_body": index < len(pieces) - 1})

    async def route_empty_chunked(self, scope, receive, send, query):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def route_headers(self, scope, receive, send, query):
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly"),
            (b"x-multi", b"one"), (b"content-type", b"text/html; charset=utf-8"),
            (b"x-multi", b"two"), (b"cache-control", b"no-store"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def route_close(self, scope, receive, send, query):
        await self.respond(send, 200, b"closing", [(b"connection", b"close")])

    async def route_size(self, scope, receive, send, query):
        body, _ = await self.read_body(receive)
        await self.respond(send, 200, b"%d bytes" % len(body))

    async def route_big(self, scope, receive, send, query):
        size = int(query.get("size", "1000000"))
        await self.respond(send, 200, bytes(range(256)) * (size // 256) + b"x" * (size % 256))

    async def route_error_before(self, scope, receive, send, query):
        raise RuntimeError("the application failed before its response")

    async def route_no_response(self, scope, receive, send, query):
        return

    async def route_wait_disconnect(self, scope, receive, send, query):
        """Waits for the client to go away without answering."""
        await self.read_body(receive)
        message = await receive()
        self.events.setdefault(query["tag"], []).append(message["type"])

    async def route_stream_until_gone(self, scope, receive, send, query):
        """Streams until the client is gone; a second task listens for the
        disconnect, as Starlette's StreamingResponse does."""
        await self.read_body(receive)
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        listener = asyncio.ensure_future(listen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(10_000):
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.01)
        except OSError:
            pass  # spec 2.4: send() on a closed connection raises
        await asyncio.wait_for(gone.wait(), 5)
        listener.cancel()
        self.events.setdefault(query["tag"], []).append("disconnected while streaming")

    async def route_events(self, scope, receive, send, query):
        await self.respond(send, 200, json.dumps(self.events.get(query["tag"], [])).encode())
