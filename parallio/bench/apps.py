"""What every contender serves: the same three routes, the same work.

``BenchApp`` is parallio's fast path (the ``http11`` protocol: ``GET /name``
calls ``name``); :mod:`parallio.bench.routes` serves the same routes through
``HttpServer``; :func:`wsgi_app` is the WSGI callable (parallio's ``wsgi``
command and granian's WSGI) and :func:`asgi_app` the ASGI one (uvicorn,
granian's ASGI). The peers load this module as a top-level module (the
asyncio peer by file path, uvicorn and granian from this folder), so it must
not import parallio: a peer's memory figures would otherwise carry
parallio's.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Iterable

PLAINTEXT_BODY = b"Hello, World!"
JSON_MESSAGE = {"message": "Hello, World!"}

#: Iterations of :func:`cpu_work` per ``/cpu`` request: about 1 ms of pure
#: Python on CPython 3.11 on the project's machine (1.3 ms on 3.13). Fixed,
#: not calibrated at run time, so every contender does exactly the same work.
CPU_ROUNDS = 12_500
CPU_PATH = b"/cpu"


def cpu_work(path: bytes, rounds: int = CPU_ROUNDS) -> int:
    """A deterministic FNV-1a-style hash loop over the request path.

    Pure Python integer work that holds the GIL the whole time: the scaling
    scenario measures how many of these a server can run in parallel.
    """
    value = 2166136261
    length = len(path)
    for index in range(rounds):
        value = ((value ^ (path[index % length] + index)) * 16777619) & 0xFFFFFFFF
    return value


def cpu_result(path: bytes = CPU_PATH) -> dict[str, Any]:
    """The ``/cpu`` response document."""
    return {"hash": cpu_work(path), "rounds": CPU_ROUNDS}


def plaintext_answer() -> tuple[bytes, bytes]:
    return b"text/plain", PLAINTEXT_BODY


def json_answer() -> tuple[bytes, bytes]:
    return b"application/json", json.dumps({"message": "Hello, World!"}).encode()


def cpu_answer() -> tuple[bytes, bytes]:
    return b"application/json", json.dumps(cpu_result(CPU_PATH)).encode()


#: The routes of the servers that build answers themselves (the asyncio
#: peer, WSGI, ASGI): path -> () -> (Content-Type, body), built per request.
ANSWERS: dict[str, Callable[[], tuple[bytes, bytes]]] = {
    "/plaintext": plaintext_answer,
    "/json": json_answer,
    "/cpu": cpu_answer,
}
_NOT_FOUND = (b"text/plain", b"Not Found")


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The routes as a plain WSGI (PEP 3333) callable."""
    answer = ANSWERS.get(environ["PATH_INFO"])
    content_type, body = answer() if answer is not None else _NOT_FOUND
    start_response("200 OK" if answer is not None else "404 Not Found",
                   [("Content-Type", content_type.decode()),
                    ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The routes as an ASGI 3 application (with the lifespan protocol,
    which granian and uvicorn both speak)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    answer = ANSWERS.get(scope["path"])
    content_type, body = answer() if answer is not None else _NOT_FOUND
    await send({"type": "http.response.start", "status": 200 if answer is not None else 404,
                "headers": [(b"content-type", content_type),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class BenchApp:
    """The benchmark routes on parallio's HTTP fast path.

    Each answer is built by its handler on every request: nothing is cached
    past what the fast path itself does for every application (the Date
    header).
    """

    http11 = True

    def plaintext(self, transport: Any, data: Any) -> bytes:
        return PLAINTEXT_BODY

    def json(self, transport: Any, data: Any) -> dict[str, str]:
        return {"message": "Hello, World!"}

    def cpu(self, transport: Any, data: Any) -> dict[str, Any]:
        return cpu_result(CPU_PATH)
