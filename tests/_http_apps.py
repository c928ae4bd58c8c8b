"""HTTP applications the HTTP tests serve. In a module (not in the test
files) so that workers in every host can import them by path."""

from __future__ import annotations

import os

import parallio
from parallio.http import HttpError, HttpServer, Limits, Response, route

def note(marker, text):
    """Append a line to the file at marker (if any): how tests see what a
    worker did."""
    if marker:
        with open(marker, "a") as file:
            file.write(text + "\n")


# -- HttpServer, the modern way: an instance and decorators ----------------------

app = HttpServer(header_timeout=0.5, idle_timeout=1.0,
                 limits=Limits(max_body=1024 * 1024))


@app.route("/plaintext")
def plaintext(transport, request):
    return b"Hello, World!"


@app.route("/json")
def json_(transport, request):
    return {"message": "Hello, World!"}


@app.route("/")
def index(transport, request):
    return "<p>index</p>"


@app.route("/hello/{name}")
def hello(transport, request, name, greeting="Hello"):
    return f"{greeting}, {name}!"


@app.route("/users/{user_id:int}/files/{rest:path}")
def user_file(transport, request, user_id, rest):
    return {"user_id": user_id, "rest": rest}


@app.route("/search")
def search(transport, request, q, limit="10"):
    return {"q": q, "limit": limit}


@app.route("/anything")
def anything(transport, request, **fields):
    return fields


@app.route("/items", methods=["POST", "PUT"])
def store(transport, request):
    return {"method": request.method, "size": len(request.body),
            "body": request.body.decode("latin-1")}


@app.route("/items")
def list_items(transport, request):
    return ["a", "b"]


@app.route("/any", methods="*")
def any_method(transport, request):
    return request.method.encode()


@app.route("/api", prefix=True)
def api(transport, request):
    return b"api:" + request.path.encode()


@app.route("/api/special")
def api_special(transport, request):
    return b"special"


@app.route("/created", methods=["POST"])
def created(transport, request):
    return Response(b"made", status=201, headers=[("Location", "/items/1")])


@app.route("/teapot")
def teapot(transport, request):
    raise HttpError(418, "I'm a teapot")


@app.route("/boom")
def boom(transport, request):
    raise RuntimeError("boom")


@app.route("/worker")
def worker(transport, request):
    return {"worker": parallio.thread_seq_id(), "pid": os.getpid()}


class Counted:
    """A streamed body that records, in a file, that close() was called."""

    def __init__(self, pieces, size, marker):
        self.pieces = pieces
        self.size = size
        self.marker = marker

    def __iter__(self):
        piece = bytes(range(256)) * (self.size // 256)
        for number in range(self.pieces):
            if number % 16 == 0:
                note(self.marker, f"piece {number}")
            yield piece

    def close(self):
        note(self.marker, "closed")


@app.route("/stream")
def stream(transport, request, pieces="4", size="1024", marker=""):
    return Response(Counted(int(pieces), int(size), marker), content_type="application/x-test")


# The same stream with timeouts a loaded machine cannot trip: for tests of
# what is held while a big stream runs, not of timeouts.
patient = HttpServer(header_timeout=30.0, idle_timeout=30.0)
patient.route("/stream")(stream)
patient.route("/plaintext")(plaintext)


@app.route("/stream-fails")
def stream_fails(transport, request, after="0"):
    def body():
        for _ in range(int(after)):
            yield b"x" * 100
        raise RuntimeError("the body failed")
    return Response(body())


# -- HttpServer, PyParallel's way: a subclass with @route methods -----------------

class Classic(HttpServer):
    header_timeout = 0.5
    idle_timeout = 1.0

    greeting = "hi"

    @route
    def plaintext(self, transport, request):
        return b"Hello, World!"

    @route
    def index(self, transport, request):
        return "<p>classic</p>"

    @route("/greet/{name}")
    def greet(self, transport, request, name):
        return f"{self.greeting} {name}"

    def helper(self, transport, request):
        return b"never a route"


class MoreClassic(Classic):
    """A subclass's @route method replaces its base's at the same path."""

    @route
    def plaintext(self, transport, request):
        return b"overridden"


classic = Classic()


# -- where a request came from (proxies' fields) -------------------------------------

def _origin(transport, request):
    return {"client": list(request.client), "scheme": request.scheme, "host": request.host,
            "peer": list(transport.peer)}


#: Trusts the default proxy (127.0.0.1) only.
origin_app = HttpServer()
origin_app.route("/origin")(_origin)
#: Trusts no proxy.
untrusting_app = HttpServer(forwarded_allow_ips="")
untrusting_app.route("/origin")(_origin)


class OriginFastPath:
    """The fast path's view of the same."""

    http11 = True
    forwarded_allow_ips = "127.0.0.0/8"

    def origin(self, transport, request):
        return _origin(transport, request)

# -- the per-worker budget of unfinished bodies (tests/test_memory.py) -------------

uploads = HttpServer(limits=Limits(max_body=8 * 1024 * 1024), body_budget=16 * 1024 * 1024)


@uploads.route("/upload", methods=["POST"])
def upload(transport, request):
    return str(len(request.body)).encode()

