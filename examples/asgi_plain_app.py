"""A plain ASGI 3 application (no framework): the TechEmpower /plaintext and
/json endpoints, what the ASGI benchmark serves on parallio and on uvicorn.

    python -m parallio asgi examples.asgi_plain_app:app --workers 1
"""

from __future__ import annotations

import json

_PLAINTEXT = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan work to do
    path = scope["path"]
    if path == "/plaintext":
        await send({"type": "http.response.start", "status": 200, "headers": _PLAINTEXT})
        await send({"type": "http.response.body", "body": b"Hello, World!"})
    elif path == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
