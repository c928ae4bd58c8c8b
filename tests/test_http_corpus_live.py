"""The corpus of hostile requests (tests/http/corpus) against live servers
in every host and engine: each gets its status (or, where the kernel resets
a connection that still had request bytes unread, a closed connection),
nothing smuggled after it is served, the connection closes, and the server
answers a good request afterwards."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from parallio.http.parser import HttpError, RequestParser
from parallio.http.server import FileServer
from parallio.http.wsgi import WsgiServer

from ._http_client import Client, address_of
from .conftest import serving

CORPUS = Path(__file__).parent / "http" / "corpus"
FILES = sorted(CORPUS.glob("*.http"))


def accepted_before_refusal(data: bytes) -> int:
    """How many requests precede the refused one in ``data``."""
    parser = RequestParser()
    count = 0
    try:
        parser.feed(data)
        for _ in parser:
            count += 1
    except HttpError:
        return count
    raise AssertionError("the corpus file is not refused")


def exchange(address: tuple, data: bytes) -> tuple[bytes, bool]:
    """Send ``data``; return what came back and whether the server reset
    the connection (rather than closing it)."""
    with socket.create_connection(address, timeout=5) as sock:
        received = b""
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            return received, True
        return received, False


def split_responses(data: bytes) -> list[bytes]:
    """The responses in ``data`` (each framed by its Content-Length)."""
    responses = []
    while data:
        assert data.startswith(b"HTTP/1.1 "), data[:100]
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        responses.append(head)
        data = rest[length:]
    return responses


def check_corpus(address: tuple) -> None:
    assert len(FILES) >= 50
    for path in FILES:
        data = path.read_bytes()
        expected = int(path.name.split("-", 1)[0])
        received, reset = exchange(address, data)
        responses = split_responses(received)
        served = accepted_before_refusal(data)
        if reset and len(responses) <= served:
            # Reset before the refusal arrived: still a closed connection,
            # and nothing beyond the accepted requests was answered.
            pass
        else:
            assert len(responses) == served + 1, (path.name, received[:300])
            last = responses[-1]
            assert last.startswith(b"HTTP/1.1 %d " % expected), (path.name, last[:100])
            assert b"\r\nConnection: close" in last, path.name
        with Client(address, timeout=5) as client:
            assert client.get("/plaintext").status == 200, f"after {path.name}"


def test_corpus_against_http_server(combo):
    with serving("tests._http_apps:classic", combo) as runtime:
        check_corpus(address_of(runtime))


@pytest.mark.parametrize("server", ["wsgi", "files"])
def test_corpus_against_wsgi_and_file_servers(server, tmp_path):
    if server == "wsgi":
        target = WsgiServer("tests._corpus_wsgi:app")
    else:
        (tmp_path / "plaintext").write_bytes(b"Hello, World!")
        target = FileServer(tmp_path)
    with serving(target, ("threads", "epoll")) as runtime:
        check_corpus(address_of(runtime))
