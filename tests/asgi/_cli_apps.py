"""Applications the command-line tests start in workers."""

import os
import threading


def _worker_name() -> bytes:
    """This worker among all hosts' workers: its process and thread."""
    return b"%d-%d" % (os.getpid(), threading.get_ident())


async def failing_startup(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "cannot reach the database"})


async def whoami(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started_in"] = _worker_name()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = _worker_name() + b" " + scope["state"]["started_in"]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
