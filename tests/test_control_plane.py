"""The control plane between the main thread and its workers: whole frames,
never a blocked supervisor, calls handed to it from any thread."""

from __future__ import annotations

import os
import socket
import threading
import time

from parallio._control import MessageReader, Outbox, encode

from .conftest import connect, recv_until, serving

A = "tests._supervision_apps:"


def _small_socketpair() -> tuple[socket.socket, socket.socket]:
    writer, reader = socket.socketpair()
    for sock in (writer, reader):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.setblocking(False)
    return writer, reader


def test_outbox_writes_whole_frames_as_the_reader_takes_them():
    writer, reader = _small_socketpair()
    with writer, reader:
        outbox = Outbox(writer.fileno())
        messages = [("message", index, os.urandom(index * 997)) for index in range(40)]
        started = time.monotonic()
        for message in messages:
            assert outbox.put(encode(message))
        # Far more than the socket holds: queued, and put() did not wait.
        assert outbox.pending > 64 * 1024
        assert time.monotonic() - started < 1.0
        received = []
        frames = MessageReader()
        reader.settimeout(5)
        while len(received) < len(messages):
            received += frames.feed(reader.recv(1500))
            outbox.flush()
        assert received == messages
        assert outbox.pending == 0


def test_outbox_refuses_whole_frames_past_its_limit_and_a_gone_reader():
    writer, reader = _small_socketpair()
    with writer:
        outbox = Outbox(writer.fileno(), limit=256 * 1024)
        frame = encode(b"y" * 100_000)
        accepted = 0
        while outbox.put(frame):
            accepted += 1
            assert accepted < 10
        assert outbox.dropped == 1
        assert outbox.pending <= 256 * 1024
        # What the reader gets is only whole frames, whatever was refused.
        frames = MessageReader()
        reader.setblocking(False)
        received = []
        while len(received) < accepted:
            try:
                received += frames.feed(reader.recv(65536))
            except BlockingIOError:
                outbox.flush()
        assert received == [b"y" * 100_000] * accepted
        reader.close()
        assert not outbox.put(encode("after the reader went"))


def test_a_reply_the_worker_stopped_waiting_for_stalls_nothing(combo):
    """The worker gives up on a main-thread call; its answer, far larger than
    the pipe, comes later. The supervisor stays free, and the worker's next
    call gets its own answer: the late reply arrived whole, not half."""
    with serving(A + "MainCalls", combo) as runtime:
        with connect(runtime, timeout=10) as sock:
            sock.sendall(b"slow\n")
            assert recv_until(sock) == b"timeout\n"
            time.sleep(0.8)  # the late answer is queued for the worker now
            started = time.monotonic()
            assert runtime.stats()[0]["worker"] == 1
            assert time.monotonic() - started < 2.0, "the supervisor waited on a worker"
            for _ in range(3):
                sock.sendall(b"fast\n")
                assert recv_until(sock) == b"ok small\n"


def test_call_soon_from_many_threads_runs_each_call_once():
    with serving("tests._protocols:Echo", ("threads", "epoll")) as runtime:
        ran: list[int] = []
        everything_ran = threading.Event()
        total = 8 * 5000

        def record(number: int) -> None:
            ran.append(number)  # on the supervisor thread only
            if len(ran) == total:
                everything_ran.set()

        def submit(base: int) -> None:
            for number in range(base, base + 5000):
                runtime.call_soon(lambda number=number: record(number))

        threads = [threading.Thread(target=submit, args=(base,)) for base in range(0, total, 5000)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert everything_ran.wait(30)
        assert sorted(ran) == list(range(total))
