"""Servers whose every kind of response is far larger than any buffer, for
the slow-reader tests: the fast path, an HttpServer stream (chunked, or
close-delimited for HTTP/1.0), static files (sendfile), WSGI (with and
without a Content-Length)."""

from __future__ import annotations

import os
import tempfile

from parallio.http import HttpServer, Response
from parallio.http.wsgi import WsgiServer

CHUNK = b"x" * 65536
#: 256 MiB in all, for every kind of response.
PIECES = 4096
SIZE = PIECES * len(CHUNK)

#: A sparse file of SIZE bytes (no disk), the same path in every worker.
STATIC_ROOT = os.path.join(tempfile.gettempdir(), f"parallio-slow-reader-{os.getuid()}")
os.makedirs(STATIC_ROOT, exist_ok=True)
with open(os.path.join(STATIC_ROOT, "big.bin"), "ab") as _file:
    if _file.tell() != SIZE:
        _file.truncate(SIZE)


def pieces():
    for _ in range(PIECES):
        yield CHUNK


streams = HttpServer()
streams.static("/files/", STATIC_ROOT)


@streams.route("/stream")
def stream(transport, request):
    return Response(pieces())


def wsgi_app(environ, start_response):
    headers = [("Content-Length", str(SIZE))] if environ["PATH_INFO"] == "/length" else []
    start_response("200 OK", headers)
    return pieces()


wsgi = WsgiServer("tests._slow_reader_apps:wsgi_app")


class FastBig:
    """The fast path: each /big answers a whole MiB (pipelined by the test)."""

    http11 = True

    def big(self, transport, request):
        return b"x" * (1 << 20)
