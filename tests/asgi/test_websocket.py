"""WebSocket sessions driven byte by byte over a raw socket: what a
misbehaving or silent client gets, which a well-behaved library client
never shows."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
import time

import pytest

from parallio.asgi import Config
from parallio.http.websocket import (
    CloseReceived,
    Message,
    Opcode,
    Ping,
    Pong,
    WebSocketConnection,
    accept_key,
    encode_frame,
)

from _serving import LOOPS, running


@pytest.fixture(params=LOOPS)
def loop(request) -> str:
    return request.param


def echo_app(log: list):
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                log.append((message["code"], message["reason"]))
                return
            await send({"type": "websocket.send", "text": message.get("text"),
                        "bytes": message.get("bytes")})
    return app


def handshake(server, early: bytes = b"") -> tuple[socket.socket, WebSocketConnection]:
    key = base64.b64encode(os.urandom(16)).decode()
    sock = server.connect()
    sock.sendall(f"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + early)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"sec-websocket-accept: {accept_key(key)}".encode() in head
    return sock, WebSocketConnection(client=True)


def next_events(sock: socket.socket, client: WebSocketConnection, count: int = 1) -> list:
    events: list = []
    while len(events) < count:
        data = sock.recv(65536)
        if not data:
            break
        client.receive_data(data)
        events.extend(client.events())
    return events


def wait_for(log: list, count: int = 1) -> list:
    deadline = time.monotonic() + 10
    while len(log) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return log


def test_frames_sent_with_the_handshake_are_not_lost(loop):
    log: list = []
    with running(echo_app(log), loop=loop) as server:
        early = encode_frame(Opcode.TEXT, b"early", mask=b"abcd")
        sock, client = handshake(server, early)
        with sock:
            assert next_events(sock, client) == [Message("early")]


@pytest.mark.parametrize("frame, code", [
    (encode_frame(Opcode.TEXT, b"unmasked"), 1002),
    (encode_frame(Opcode.TEXT, b"\xff\xfe", mask=b"abcd"), 1007),
    (encode_frame(0x3, b"", mask=b"abcd"), 1002),
    (encode_frame(Opcode.PING, b"x" * 126, mask=b"abcd"), 1002),
    (encode_frame(Opcode.BINARY, b"x" * 2000, mask=b"abcd"), 1009),
    (encode_frame(Opcode.CONTINUATION, b"x", mask=b"abcd"), 1002),
])
def test_protocol_violations_close_with_the_rfc_code(loop, frame, code):
    log: list = []
    with running(echo_app(log), Config(ws_max_message_size=1000), loop=loop) as server:
        sock, client = handshake(server)
        with sock:
            sock.sendall(frame)
            (close,) = next_events(sock, client)
            assert type(close) is CloseReceived and close.code == code
            assert sock.recv(10) == b""  # and the server closes the connection
        assert wait_for(log)[0][0] == code


def test_pings_are_answered_and_the_close_handshake_completes(loop):
    log: list = []
    with running(echo_app(log), loop=loop) as server:
        sock, client = handshake(server)
        with sock:
            sock.sendall(client.send_ping(b"hi") + client.send_message(b"\x00bin"))
            assert next_events(sock, client, 2) == [Pong(b"hi"), Message(b"\x00bin")]
            sock.sendall(client.close(1001, "going"))
            (close,) = next_events(sock, client)
            assert close == CloseReceived(1001, "")  # the server echoes the code
        assert wait_for(log) == [(1001, "going")]


def test_idle_sessions_are_pinged_and_silent_ones_closed(loop):
    log: list = []
    config = Config(ws_ping_interval=0.5, ws_ping_timeout=1.0)
    with running(echo_app(log), config, loop=loop) as server:
        sock, client = handshake(server)
        with sock:
            (ping,) = next_events(sock, client)
            assert type(ping) is Ping
            sock.sendall(client.send_pong(ping.payload))
            (ping,) = next_events(sock, client)  # pinged again once idle again
            assert type(ping) is Ping
            # No pong this time: the session is closed.
            started = time.monotonic()
            events = next_events(sock, client)
            assert events and type(events[0]) is CloseReceived and events[0].code == 1011
            assert time.monotonic() - started < 5
        assert wait_for(log)[0][0] in (1006, 1011)


def test_server_shutdown_closes_open_sessions_with_1012(loop):
    log: list = []
    with running(echo_app(log), loop=loop) as server:
        sock, client = handshake(server)
    with sock:
        events = next_events(sock, client)
        assert events and type(events[0]) is CloseReceived and events[0].code == 1012


def test_messages_for_an_application_that_does_not_receive_stop_the_reading(loop):
    release = threading.Event()  # set by the test's thread, polled by the application
    received: list = []

    async def slow(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while not release.is_set():
            await asyncio.sleep(0.01)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message["bytes"])

    with running(slow, Config(ws_max_queue=4), loop=loop) as server:
        sock, client = handshake(server)
        with sock:
            sock.setblocking(False)
            payload = b"m" * 65536
            sent = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the socket buffers fill up
                try:
                    sock.send(client.send_message(payload))
                    sent += 1
                except BlockingIOError:
                    break
            assert time.monotonic() < deadline, "the server never stopped reading"
            release.set()
            sock.setblocking(True)
            wait_for(received, 4)
        assert len(received) >= 4 and sent < 1000
