"""parallio's asyncio loop on real sockets, for every engine variant: what
its own code adds to asyncio (the readiness selector on the engine, the
completion transports over Stream, the end-of-turn write batching).
CPython's own asyncio suite runs against the loop in
``tests/asyncio_conformance``."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

import parallio.loop
from parallio.engine.base import Engine

from ..test_engines import ENGINE_VARIANTS, _engine_class

pytestmark = pytest.mark.timeout(60)


class CountingEngine:
    """An engine that counts the sends it is asked for."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.sends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def send(self, handle: Any, data: Any, on_sent: Any) -> None:
        self.sends += 1
        self._engine.send(handle, data, on_sent)

    def sendmsg(self, handle: Any, buffers: Any, on_sent: Any) -> None:
        self.sends += 1
        self._engine.sendmsg(handle, buffers, on_sent)


@pytest.fixture(params=list(ENGINE_VARIANTS))
def loop(request) -> Iterator[parallio.loop.EventLoop]:
    cls = _engine_class(request.param)
    engine = CountingEngine(cls(**ENGINE_VARIANTS[request.param][2]))
    event_loop = parallio.loop.EventLoop(engine)  # type: ignore[arg-type]
    try:
        yield event_loop
    finally:
        event_loop.close()
        engine.shutdown()


def run(loop: asyncio.AbstractEventLoop, coroutine: Any, timeout: float = 10.0) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coroutine, timeout))


class Collect(asyncio.Protocol):
    """Records what happens to it; ``lost`` resolves at connection_lost."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[str] = []
        self.transport: Any = None
        self.lost: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
        self.received = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.received.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        return True

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def connected_pair(loop: asyncio.AbstractEventLoop) -> tuple[Collect, socket.socket]:
    """A transport of the loop's and the plain socket at its other end."""
    ours, theirs = socket.socketpair()
    protocol = Collect()
    await loop.connect_accepted_socket(lambda: protocol, ours)
    theirs.setblocking(False)
    return protocol, theirs


async def recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_readers_are_level_triggered_and_removable(loop):
    reader, writer = socket.socketpair()
    calls = []

    async def main() -> None:
        loop.add_reader(reader, lambda: calls.append(1))
        writer.send(b"x")
        for _ in range(5):
            await asyncio.sleep(0)
        # Unread data keeps the descriptor readable: reported every turn.
        assert len(calls) >= 3
        assert reader.recv(1) == b"x"
        await asyncio.sleep(0.01)
        settled = len(calls)
        await asyncio.sleep(0.05)
        assert len(calls) == settled  # drained: no more calls
        assert loop.remove_reader(reader)
        writer.send(b"y")
        await asyncio.sleep(0.05)
        assert len(calls) == settled

    try:
        run(loop, main())
    finally:
        reader.close()
        writer.close()


def test_a_writer_and_a_reader_on_one_descriptor(loop):
    left, right = socket.socketpair()
    seen: list[str] = []

    async def main() -> None:
        loop.add_reader(left, lambda: seen.append("r"))
        loop.add_writer(left, lambda: (seen.append("w"), loop.remove_writer(left)))
        await asyncio.sleep(0.05)
        assert seen == ["w"]  # writable at once, nothing to read yet
        right.send(b"z")
        await asyncio.sleep(0.05)
        assert "r" in seen
        loop.remove_reader(left)

    try:
        run(loop, main())
    finally:
        left.close()
        right.close()


def test_call_soon_threadsafe_wakes_a_loop_waiting_on_nothing(loop):
    async def main() -> float:
        woken = loop.create_future()
        started = time.monotonic()
        threading.Timer(0.2, loop.call_soon_threadsafe, (woken.set_result, None)).start()
        await woken
        return time.monotonic() - started

    assert run(loop, main()) < 2.0


def test_writes_of_one_turn_leave_in_one_send(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        await asyncio.sleep(0)
        before = loop.engine.sends
        for piece in (b"head ", b"body ", b"tail"):
            protocol.transport.write(piece)
        assert await recv_exactly(loop, peer, 14) == b"head body tail"
        assert loop.engine.sends - before == 1
        protocol.transport.close()
        await protocol.lost
        peer.close()

    run(loop, main())


def test_pause_and_resume_writing_follow_the_water_marks(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        transport = protocol.transport
        transport.set_write_buffer_limits(high=0)
        assert transport.get_write_buffer_limits() == (0, 0)
        transport.write(b"x" * 10)
        assert protocol.events == ["made", "pause"]  # over high water at once
        assert await recv_exactly(loop, peer, 10) == b"x" * 10
        for _ in range(20):
            if "resume" in protocol.events:
                break
            await asyncio.sleep(0.01)
        # A low water mark of 0 is reached when everything was sent.
        assert protocol.events == ["made", "pause", "resume"]
        assert transport.get_write_buffer_size() == 0
        transport.set_write_buffer_limits(high=1 << 20)
        transport.write(b"y" * (2 << 20))
        assert protocol.events[-1] == "pause"
        assert await recv_exactly(loop, peer, 2 << 20) == b"y" * (2 << 20)
        await asyncio.sleep(0.05)
        assert protocol.events[-1] == "resume"
        transport.close()
        await protocol.lost
        peer.close()

    run(loop, main())


def test_write_eof_half_closes_and_reading_goes_on(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        transport = protocol.transport
        transport.write(b"last words")
        transport.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"more")
        assert await recv_exactly(loop, peer, 10) == b"last words"
        assert await loop.sock_recv(peer, 10) == b""
        await loop.sock_sendall(peer, b"still listening?")
        await protocol.received.wait()
        assert bytes(protocol.data) == b"still listening?"
        peer.close()
        while "eof" not in protocol.events:
            await asyncio.sleep(0.01)
        # eof_received() returned True: the transport stays until closed.
        await asyncio.sleep(0.05)
        assert "lost" not in protocol.events
        transport.close()
        assert await protocol.lost is None
        assert protocol.events == ["made", "eof", "lost"]

    run(loop, main())


def test_close_sends_what_is_queued_first_and_loses_the_connection_later(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        payload = os.urandom(3 << 20)
        protocol.transport.write(payload)
        protocol.transport.close()
        assert protocol.transport.is_closing()
        assert "lost" not in protocol.events
        assert await recv_exactly(loop, peer, len(payload)) == payload
        assert await loop.sock_recv(peer, 10) == b""
        assert await protocol.lost is None
        peer.close()

    run(loop, main())


def test_abort_drops_the_queue_and_reports_the_loss_from_the_loop(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        await asyncio.sleep(0)
        protocol.transport.write(b"never sent")
        protocol.transport.abort()
        assert "lost" not in protocol.events  # not from inside abort()
        assert await protocol.lost is None
        assert protocol.transport.get_extra_info("socket").fileno() == -1
        peer.close()

    run(loop, main())


def test_buffered_protocols_get_every_byte_through_small_buffers(loop):
    class Small(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buffer = bytearray(7)
            self.got = bytearray()
            self.done = asyncio.get_event_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buffer[:nbytes]

        def eof_received(self) -> None:
            self.done.set_result(bytes(self.got))

    async def main() -> None:
        ours, theirs = socket.socketpair()
        protocol = Small()
        await loop.connect_accepted_socket(lambda: protocol, ours)
        payload = os.urandom(200_000)
        await loop.sock_sendall(theirs, payload)
        theirs.shutdown(socket.SHUT_WR)
        assert await protocol.done == payload
        theirs.close()

    run(loop, main())


def test_sendfile_goes_after_what_was_written_and_moves_the_file_position(loop):
    async def main() -> None:
        protocol, peer = await connected_pair(loop)
        data = os.urandom(300_000)
        with tempfile.TemporaryFile() as file:
            file.write(data)
            file.seek(0)
            expected = b"before:" + data[1000:201_000] + b":after"
            received = loop.create_task(recv_exactly(loop, peer, len(expected)))
            protocol.transport.write(b"before:")
            sent = await loop.sendfile(protocol.transport, file, 1000, 200_000)
            assert sent == 200_000
            assert file.tell() == 201_000
            assert not file.closed
            protocol.transport.write(b":after")
            assert await received == expected
        protocol.transport.close()
        await protocol.lost
        peer.close()

    run(loop, main())


def test_a_server_accepts_many_connections_and_closes_its_clients(loop):
    class Upper(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())

    async def main() -> None:
        server = await loop.create_server(Upper, "127.0.0.1", 0, reuse_port=True)
        port = server.sockets[0].getsockname()[1]

        async def client(number: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello %d\n" % number)
            line = await reader.readline()
            peer = writer.get_extra_info("peername")
            writer.close()
            await writer.wait_closed()
            assert peer[1] == port
            return line

        lines = await asyncio.gather(*(client(number) for number in range(200)))
        assert lines == [b"HELLO %d\n" % number for number in range(200)]
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=30)


def test_loops_of_the_public_surface_are_parallios():
    fresh = parallio.loop.new_event_loop("epoll")
    assert fresh.engine.name == "epoll"
    fresh.close()

    async def kind() -> str:
        return type(asyncio.get_running_loop()).__name__

    assert parallio.loop.run(kind(), io="epoll") == "EventLoop"
    previous = asyncio.get_event_loop_policy()
    try:
        parallio.loop.install()
        assert asyncio.run(kind()) == "EventLoop"
    finally:
        asyncio.set_event_loop_policy(previous)
