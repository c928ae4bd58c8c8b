"""A Starlette application for parallio's ASGI server: routes, a streamed
response, a streamed request body, a WebSocket echo and lifespan state.

    python -m parallio asgi examples.asgi_starlette_app:app --port 8000
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict]:
    # Once per worker: what a real application would open here is a
    # connection pool; its requests find it in request.state.
    yield {"greeting": "hello from the lifespan", "counter": itertools.count(1)}


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"],
                         "query": dict(request.query_params),
                         "hit": next(request.state.counter)})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("count", "5"))

    async def numbers() -> AsyncIterator[bytes]:
        for number in range(count):
            yield b"%d\n" % number
            await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    size = pieces = 0
    async for piece in request.stream():
        size += len(piece)
        pieces += bool(piece)
    return JSONResponse({"bytes": size, "pieces": pieces})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


app = Starlette(lifespan=lifespan, routes=[
    Route("/", homepage),
    Route("/items/{item_id:int}", item),
    Route("/stream", stream),
    Route("/upload", upload, methods=["POST"]),
    WebSocketRoute("/ws", echo),
])
