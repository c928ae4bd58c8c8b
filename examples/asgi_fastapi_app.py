"""A FastAPI application for parallio's ASGI server: a validated JSON body,
a dependency, a WebSocket.

    python -m parallio asgi examples.asgi_fastapi_app:app --port 8000
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

app = FastAPI()


class Order(BaseModel):
    item: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=100)
    note: str | None = None


def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    if not x_user:
        raise HTTPException(status_code=401, detail="X-User header required")
    return x_user


@app.post("/orders")
async def create_order(order: Order, user: Annotated[str, Depends(current_user)]) -> dict:
    return {"user": user, "item": order.item, "total": order.quantity * 3}


@app.get("/users/me")
async def me(user: Annotated[str, Depends(current_user)]) -> dict:
    return {"user": user}


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "echo": text})
    except WebSocketDisconnect:
        pass
