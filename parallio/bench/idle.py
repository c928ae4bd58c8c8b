"""Many idle keep-alive connections: each asks once, gets its answer, and
stays open doing nothing, so the server holds its per-connection state."""

from __future__ import annotations

import asyncio

from .apps import PLAINTEXT_BODY

# Connections being set up at once: below every contender's listen
# backlog, so no SYN is dropped and retried a second later.
_CONCURRENT_CONNECTS = 256


class IdleConnections:
    """Opens ``count`` connections to ``host``:``port`` on :meth:`open`
    (each does one GET /plaintext) and holds them until :meth:`close`."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.answered = 0
        self.problems: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._writers: list[asyncio.StreamWriter] = []

    def open(self, timeout: float = 60.0) -> None:
        self._loop.run_until_complete(asyncio.wait_for(self._open_all(), timeout))

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._loop.run_until_complete(asyncio.sleep(0))  # let the closes go out
        self._writers.clear()
        self._loop.close()

    async def _open_all(self) -> None:
        gate = asyncio.Semaphore(_CONCURRENT_CONNECTS)
        await asyncio.gather(*(self._open_one(gate) for _ in range(self.count)))

    async def _open_one(self, gate: asyncio.Semaphore) -> None:
        request = f"GET /plaintext HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self._writers.append(writer)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.problems.append(f"{type(exc).__name__}: {exc}")
                return
        if head.startswith(b"HTTP/1.1 200 ") and body == PLAINTEXT_BODY:
            self.answered += 1
        else:
            self.problems.append(f"wrong answer: {head[:40]!r} {body[:40]!r}")
