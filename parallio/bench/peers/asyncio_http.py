"""The asyncio peer: an HTTP/1.1 keep-alive server on asyncio.Protocol.

A fair, competent peer, the way a careful asyncio programmer would write a
small fast server: one ``find`` per request head, one lower-cased copy of
the head to look up the few headers that matter, pipelined requests answered
with one write, response headers from prepared bytes and a Date line cached
once a second. It validates nothing beyond the request line's shape: heads
that parallio's parser refuses (bare LF, obs-fold, a space before a colon,
control characters, a missing Host ...) are served or left waiting, so it
does less work per request than a strict parser; the suite measures and
reports which malformed heads each contender refuses. The handlers do the same work as parallio's ``BenchApp``
(:mod:`parallio.bench.apps`): ``/plaintext``, ``/json`` (``json.dumps`` of a
dict built per request), ``/cpu`` (:func:`cpu_work`); with ``--static DIR``,
``/NAME`` serves the file DIR/NAME through ``loop.sendfile`` (os.sendfile
on the stdlib loop; uvloop has no sendfile, so there it is read and written).

Run it as a script, not with ``-m``: ``python .../asyncio_http.py --port P``.
Importing it as ``parallio.bench.peers...`` would import parallio first and
charge the peer's memory for it, so it loads ``apps.py`` by file path.

``--uvloop`` runs the same code on uvloop. ``--workers N`` forks N
processes, each with its own loop and its own SO_REUSEPORT socket.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable

_APPS_PATH = Path(__file__).resolve().parent.parent / "apps.py"
_spec = importlib.util.spec_from_file_location("bench_apps", _APPS_PATH)
assert _spec is not None and _spec.loader is not None
apps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(apps)

MAX_HEAD = 64 * 1024
SERVER_NAME = b"asyncio"

_STATUS_LINES = {
    200: b"HTTP/1.1 200 OK\r\n",
    400: b"HTTP/1.1 400 Bad Request\r\n",
    404: b"HTTP/1.1 404 Not Found\r\n",
    405: b"HTTP/1.1 405 Method Not Allowed\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    505: b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
}

#: "Date: ...\r\n", rewritten once a second by each loop (each process has
#: its own copy).
_date_line = b""


def _refresh_date(loop: asyncio.AbstractEventLoop) -> None:
    global _date_line
    _date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
    loop.call_later(1.0, _refresh_date, loop)


#: What a route returns: status, Content-Type and body.
Answer = tuple[int, bytes, bytes]


def _route(answer: Callable[[], tuple[bytes, bytes]]) -> Callable[[bytes], Answer]:
    def handle(_query: bytes) -> Answer:
        content_type, body = answer()
        return 200, content_type, body
    return handle


#: Path -> handler of the query string (the bytes after "?"): the routes of
#: apps.py, built per request; other applications add theirs here, as the
#: wiki's peer does.
ROUTES: dict[bytes, Callable[[bytes], Answer]] = {
    path.encode(): _route(answer) for path, answer in apps.ANSWERS.items()}


def response_head(status: int, content_type: bytes, length: int, keep_alive: bool) -> bytes:
    return b"".join((
        _STATUS_LINES[status], b"Server: ", SERVER_NAME, b"\r\n", _date_line,
        b"Content-Type: ", content_type, b"\r\nContent-Length: ", b"%d" % length,
        b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n"))


def _header_value(lowered_head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, with its colon) in a
    lower-cased head, or None. Heads are small, so ``find`` beats parsing
    every line."""
    start = lowered_head.find(b"\r\n" + name)
    if start < 0:
        return None
    start += 2 + len(name)
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start:end if end >= 0 else len(lowered_head)].strip()


class HttpProtocol(asyncio.Protocol):
    """One connection: parse GET/HEAD requests, answer each in order."""

    def __init__(self, files: dict[bytes, tuple[Path, int]]) -> None:
        self.files = files
        self.transport: Any = None
        self.buffer = b""
        # True while a file is being sent: later requests wait in buffer.
        self.sending_file = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if self.sending_file:
            self.buffer = data
            return
        self.process(data)

    def process(self, data: bytes) -> None:
        out: list[bytes] = []
        position = 0
        while True:
            end = data.find(b"\r\n\r\n", position)
            if end < 0:
                rest = data[position:]
                if len(rest) > MAX_HEAD:
                    self.fail(out, 431)
                    return
                self.buffer = rest
                break
            head = data[position:end]
            position = end + 4
            answer = self.answer(head, out)
            if answer is None:  # the connection is closing
                return
            if answer is not True:  # a file: the rest waits until it is sent
                self.buffer = data[position:]
                self.start_file(out, *answer)
                return
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def answer(self, head: bytes, out: list[bytes]) -> Any:
        """Append the response to ``head`` to ``out``. Returns True to go
        on, None once the connection is closing, or (path, size,
        keep_alive, head_only) when a file must follow."""
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3:
            self.fail(out, 400)
            return None
        method, target, version = parts
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            # Closing after each HTTP/1.0 request is always correct, and
            # spares the Connection: keep-alive answer such clients need.
            keep_alive = False
        elif version.startswith(b"HTTP/"):
            self.fail(out, 505)
            return None
        else:
            self.fail(out, 400)
            return None
        keep_alive, has_body = self.read_headers(head, line_end, keep_alive)
        if has_body or method not in (b"GET", b"HEAD"):
            # GET and HEAD only; a request body would have to be framed.
            self.fail(out, 405 if not has_body else 400)
            return None
        head_only = method == b"HEAD"
        path, _, query = target.partition(b"?")
        route = ROUTES.get(path)
        if route is not None:
            status, content_type, body = route(query)
            out.append(response_head(status, content_type, len(body), keep_alive))
            if not head_only:
                out.append(body)
        else:
            found = self.files.get(path)
            if found is not None:
                return (*found, keep_alive, head_only)
            body = b"Not Found"
            out.append(response_head(404, b"text/plain", len(body), keep_alive))
            if not head_only:
                out.append(body)
        if not keep_alive:
            self.transport.write(b"".join(out))
            self.transport.close()
            return None
        return True

    @staticmethod
    def read_headers(head: bytes, line_end: int, keep_alive: bool) -> tuple[bool, bool]:
        """(keep the connection alive?, does a body follow?)"""
        if line_end < 0:
            return keep_alive, False
        lowered = head[line_end:].lower()
        connection = _header_value(lowered, b"connection:")
        if connection is not None:
            if b"close" in {token.strip() for token in connection.split(b",")}:
                keep_alive = False
        length = _header_value(lowered, b"content-length:")
        has_body = (length is not None and length != b"0") or (
            _header_value(lowered, b"transfer-encoding:") is not None)
        return keep_alive, has_body

    def fail(self, out: list[bytes], status: int) -> None:
        body = _STATUS_LINES[status][9:-2]
        out.append(response_head(status, b"text/plain", len(body), keep_alive=False))
        out.append(body)
        self.transport.write(b"".join(out))
        self.transport.close()

    def start_file(self, out: list[bytes], path: Path, size: int, keep_alive: bool,
                   head_only: bool) -> None:
        out.append(response_head(200, b"application/octet-stream", size, keep_alive))
        self.transport.write(b"".join(out))
        if head_only:
            self.file_sent(keep_alive)
            return
        self.sending_file = True
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self.send_file(path, size, keep_alive))

    async def send_file(self, path: Path, size: int, keep_alive: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            with open(path, "rb") as file:
                try:
                    await loop.sendfile(self.transport, file, 0, size)
                except NotImplementedError:  # uvloop
                    self.transport.write(file.read(size))
        except (ConnectionError, OSError):
            self.transport.abort()
            return
        self.sending_file = False
        self.file_sent(keep_alive)

    def file_sent(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.transport.close()
            return
        self.transport.resume_reading()
        if self.buffer:
            data, self.buffer = self.buffer, b""
            self.process(data)


def list_files(directory: str | None) -> dict[bytes, tuple[Path, int]]:
    """``/NAME`` -> (path, size) for the regular files directly in
    ``directory``, listed once at start."""
    if directory is None:
        return {}
    return {b"/" + entry.name.encode(): (Path(entry.path), entry.stat().st_size)
            for entry in os.scandir(directory) if entry.is_file()}


async def serve(host: str, port: int, files: dict[bytes, tuple[Path, int]]) -> None:
    loop = asyncio.get_running_loop()
    _refresh_date(loop)
    server = await loop.create_server(lambda: HttpProtocol(files), host, port,
                                      reuse_port=True, backlog=4096)
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def run_loop(args: argparse.Namespace, files: dict[bytes, tuple[Path, int]]) -> None:
    factory = None
    if args.uvloop:
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port, files))


def run_forked(args: argparse.Namespace, files: dict[bytes, tuple[Path, int]]) -> None:
    """N processes, each its own loop; this one only waits and forwards
    SIGTERM/SIGINT."""
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                run_loop(args, files)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue


def main(argv: list[str] | None = None) -> None:
    global SERVER_NAME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each with its own loop (default 1: no fork)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--static", metavar="DIR", help="serve the files in DIR as /NAME")
    args = parser.parse_args(argv)
    if args.uvloop:
        SERVER_NAME = b"uvloop"
    files = list_files(args.static)
    if args.workers > 1:
        run_forked(args, files)
    else:
        run_loop(args, files)


if __name__ == "__main__":
    main(sys.argv[1:])
