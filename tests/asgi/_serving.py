"""Run parallio's ASGI server (or uvicorn, the peer of the differential
tests) in a background thread with its own event loop, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any, Callable, Iterator, Optional

from parallio.asgi import Config, serve_asgi

LOOPS = ["asyncio", "uvloop"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Running:
    """A server in its thread: ``address``, and ``events`` for lifespan
    tests (what the server thread saw)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.host, self.port = address
        self.error: Optional[BaseException] = None

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(self.address, timeout=timeout)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"


@contextlib.contextmanager
def running(app: Any, config: Config = Config(), loop: str = "asyncio",
            serve: Optional[Callable[..., Any]] = None) -> Iterator[Running]:
    """Serve ``app`` until the block ends; a startup failure is raised here."""
    sock = listening_socket()
    handle = Running(sock.getsockname()[:2])
    started = threading.Event()
    control: dict[str, Any] = {}

    def main() -> None:
        event_loop = new_loop(loop)
        asyncio.set_event_loop(event_loop)

        async def run() -> None:
            control["stop"] = asyncio.Event()
            control["loop"] = event_loop
            await (serve or serve_asgi)(app, sock, config, stop=control["stop"], ready=started.set)

        try:
            event_loop.run_until_complete(run())
        except BaseException as error:  # reported to the test
            handle.error = error
        finally:
            started.set()
            event_loop.close()
            sock.close()

    thread = threading.Thread(target=main, name="asgi-server", daemon=True)
    thread.start()
    if not started.wait(20):
        raise TimeoutError("the server did not start in 20 s")
    if handle.error is not None:
        raise handle.error
    try:
        yield handle
    finally:
        event_loop = control.get("loop")
        if event_loop is not None and not event_loop.is_closed():
            event_loop.call_soon_threadsafe(control["stop"].set)
        thread.join(20)
        assert not thread.is_alive(), "the server did not stop in 20 s"
    if handle.error is not None:
        raise handle.error
