"""WSGI applications the WSGI tests serve. In a module (not in the test
files) so that workers in every host can import them by path."""

from __future__ import annotations

import json
import os
import sys
import warnings
from urllib.parse import parse_qsl
from wsgiref.validate import WSGIWarning, validator

from parallio.http.wsgi import WsgiServer

from ._http_apps import note


# The validator reports some faults as warnings: make them fail the request.
warnings.simplefilter("error", WSGIWarning)


class _Body:
    """A WSGI body that records its progress and its close() in a file."""

    def __init__(self, pieces, size, marker, fail_after=None):
        self.pieces, self.size, self.marker, self.fail_after = pieces, size, marker, fail_after

    def __iter__(self):
        piece = bytes(range(256)) * (self.size // 256)
        for number in range(self.pieces):
            if number == self.fail_after:
                raise RuntimeError("the body failed")
            if number % 16 == 0:
                note(self.marker, f"piece {number}")
            yield piece

    def close(self):
        note(self.marker, "closed")


def _query(environ):
    return dict(parse_qsl(environ.get("QUERY_STRING", "")))


def wsgi_app(environ, start_response):
    """Every PEP 3333 feature the tests check, one path each."""
    path = environ["PATH_INFO"]
    query = _query(environ)
    marker = query.get("marker", "")
    if path == "/environ":
        shown = {key: value for key, value in environ.items() if isinstance(value, (str, bool, tuple))}
        body = json.dumps(shown).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        stream = environ["wsgi.input"]
        if "CONTENT_LENGTH" in environ:
            length = int(environ["CONTENT_LENGTH"] or 0)
            first = stream.read(min(length, 5))
            pieces = [first, stream.read(length - len(first))]
        else:  # chunked: read to the end (wsgi.input_terminated)
            pieces = list(iter(lambda: stream.read(7), b""))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return pieces
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d lines\n" % len(lines)]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Body(int(query.get("pieces", "4")), int(query.get("size", "1024")), marker,
                     int(query["fail_after"]) if "fail_after" in query else None)
    if path == "/sized":
        pieces, size = int(query.get("pieces", "4")), int(query.get("size", "1024"))
        declared = int(query.get("declared", pieces * size))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(declared))])
        return _Body(pieces, size, marker)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned"]
    if path == "/many-writes":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        for number in range(3000):
            write(b"%d," % number)
        return []
    if path == "/late-start":
        def late():
            start_response("202 Accepted", [("Content-Type", "text/plain"), ("X-Late", "yes")])
            yield b""
            yield b"late body"
        return late()
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("caught by the application")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"recovered"]
    if path == "/exc-info-late":
        def late():
            yield b"started "
            try:
                raise ValueError("too late")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
            yield b"never"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return late()
    if path == "/error":
        raise RuntimeError("the application failed")
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "split\r\nInjected: yes")])
        return [b"never"]
    if path == "/hop":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        return [b"never"]
    if path == "/connection-close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"bye"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/not-modified":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return [b""]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [f"no such path: {path}\n".encode("latin-1")]


validated = validator(wsgi_app)

#: Found by import path, as any module-level server.
wsgi_server = WsgiServer(validator(wsgi_app), header_timeout=0.5, idle_timeout=1.0)


def threaded(environ, start_response):
    """Handlers that block, stream slowly or read slowly: what the pool is for."""
    import io
    import time

    path = environ["PATH_INFO"]
    query = _query(environ)
    marker = query.get("marker", "")
    if path == "/sleep":
        time.sleep(float(query.get("seconds", "1")))
        note(marker, "finished")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/fast":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fast"]
    if path == "/upload":
        # Reads nothing for a while, then everything, counting.
        time.sleep(float(query.get("wait", "0")))
        stream = environ["wsgi.input"]
        total = 0
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            total += len(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    if path == "/lines":
        stream = environ["wsgi.input"]
        lines = [stream.readline(), stream.readline(3), stream.read(2)]
        lines += stream.readlines()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([line.decode() for line in lines]).encode()]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        file = open(query["path"], "rb")
        file.seek(int(query.get("skip", "0")))
        return environ["wsgi.file_wrapper"](file, 4096)
    if path == "/file-like":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"not a file " * 1000), 4096)
    if path == "/drip":
        def drip():
            for number in range(int(query.get("pieces", "10"))):
                yield b"%d\n" % number
                time.sleep(float(query.get("every", "0.2")))
            note(marker, "dripped")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return drip()
    if path == "/whoami":
        # Which instance answered (the scale-out tests name them), for whom.
        time.sleep(float(query.get("sleep", "0")))
        body = json.dumps({"instance": os.environ.get("PARALLIO_TEST_INSTANCE"),
                           "remote_addr": environ["REMOTE_ADDR"],
                           "scheme": environ["wsgi.url_scheme"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/environ":
        return wsgi_app(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such path\n"]

def upload_size(environ, start_response):
    """Reads the whole body and answers with its length."""
    size = len(environ["wsgi.input"].read())
    body = str(size).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

