"""What the listening, logging and command-line tests serve. Here (not in
the test files) so workers of every host can import them by path."""

from __future__ import annotations

import os
import threading
import time

import parallio
from parallio.http import HttpServer, Response


class WhoSlow:
    """Answers each message, after a pause, with the worker that took it:
    under concurrent clients, a worker busy with one leaves the next
    connections to the others."""

    def data_received(self, transport, data):
        time.sleep(0.005)
        return f"{parallio.thread_seq_id()}\n"


class Environment:
    """Answers with what the worker sees of socket activation's variables
    and its own name."""

    def data_received(self, transport, data):
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as file:
            comm = file.read().strip()
        return (f"{os.environ.get('LISTEN_FDS')} {os.environ.get('LISTEN_PID')} "
                f"{parallio.thread_seq_id()} {comm}\n")


class FastPath:
    """An ``http11`` fast-path class."""

    http11 = True

    def hello(self, transport, request):
        return b"Hello, World!"

    def raw(self, transport, request):
        # Sends its own response: the access log cannot know its status
        # unless told.
        transport.send(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")

    def told(self, transport, request):
        from parallio.http import note_response
        response = b"HTTP/1.1 203 Non-Authoritative\r\nContent-Length: 4\r\n\r\ntold"
        transport.send(response)
        note_response(transport, response)


app = HttpServer()


@app.route("/hello")
def hello(transport, request):
    return b"hi there"


@app.route("/stream")
def stream(transport, request):
    return Response(iter([b"a" * 1000, b"b" * 500]), status=201)


@app.route("/boom")
def boom(transport, request):
    raise RuntimeError("boom")


def wsgi_app(environ, start_response):
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("the application failed")
    body = f"wsgi {environ['REQUEST_METHOD']} {environ.get('REMOTE_ADDR')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"asgi says hi"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
