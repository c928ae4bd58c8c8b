"""The benchmark routes on :class:`parallio.http.HttpServer`: the same three
routes and the same work as :class:`parallio.bench.apps.BenchApp`, through
the route table (``python -m parallio serve parallio.bench.routes:app``)."""

from __future__ import annotations

from typing import Any

from ..http import HttpServer
from .apps import CPU_PATH, PLAINTEXT_BODY, cpu_result

app = HttpServer()


@app.route("/plaintext")
def plaintext(transport: Any, request: Any) -> bytes:
    return PLAINTEXT_BODY


@app.route("/json")
def json(transport: Any, request: Any) -> dict[str, str]:
    return {"message": "Hello, World!"}


@app.route("/cpu")
def cpu(transport: Any, request: Any) -> dict[str, Any]:
    return cpu_result(CPU_PATH)
