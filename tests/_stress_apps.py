"""The application the stress scripts and their short tests serve (a module,
so workers of every host import it by path)."""

from __future__ import annotations

import os

import parallio
from parallio.http import HttpServer, Response, route

_PIECE = b"x" * 65536
#: Pieces of ``/big``: 4 MiB, far more than a socket buffer, for slow readers.
BIG_PIECES = 64


def _big():
    for _ in range(BIG_PIECES):
        yield _PIECE


class Mixed(HttpServer):
    """``/who``: worker number and pid; ``POST /upload``: the length of the
    body it got; ``/big``: 4 MiB, streamed (chunked)."""

    @route
    def who(self, transport, request):
        return f"{parallio.thread_seq_id()} {os.getpid()}"

    @route(methods="POST")
    def upload(self, transport, request):
        return str(len(request.body))

    @route
    def big(self, transport, request):
        return Response(_big())
