"""The contenders: how each is started, stopped and checked for correct
answers before any load."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import apps
from .peers import nginx as nginx_peer
from .proc import process_tree, set_session_priority

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
PEER_SCRIPT = BENCH_DIR / "peers" / "asyncio_http.py"
#: The files of the static scenario: route -> (file name, size).
STATIC_FILES = {"static4k": ("4k.bin", 4 << 10), "static1m": ("1mb.bin", 1 << 20)}

#: What a contender is started to serve: the three app routes, or files.
APP, STATIC = "app", "static"

#: How a contender serves the routes. parallio: its fast path (``http11``
#: protocol), HttpServer routes, or a WSGI callable; a peer: its own code.
FASTPATH, ROUTES, WSGI, ASGI, OWN = "fastpath", "routes", "wsgi", "asgi", "own"
#: parallio's fast path with an access log (to a file in the scratch
#: folder): what the log costs per request.
ACCESS_LOG = "access_log"


@dataclass(frozen=True)
class Contender:
    """One server under test. ``family`` is parallio, asyncio, uvloop,
    uvicorn, granian or nginx; ``app`` says how it serves the routes;
    parallio contenders also name their host and engine."""

    name: str
    family: str
    app: str = OWN
    host: str = ""
    engine: str = ""
    #: What ``--parallel auto --io auto`` picks on this Python.
    default: bool = False
    #: The program to run, for peers that are not Python (nginx).
    binary: str = ""
    #: Why this contender cannot serve APP / STATIC here (None: it can).
    app_skip: str | None = None
    static_skip: str | None = None

    @property
    def combo(self) -> str:
        return f"{self.host}/{self.engine}" if self.family == "parallio" else ""

    @property
    def serves_cpu(self) -> bool:
        return self.family != "nginx"  # nginx runs no Python handler

    def skip_reason(self, purpose: str) -> str | None:
        return self.app_skip if purpose == APP else self.static_skip

    def argv(self, purpose: str, port: int, workers: int, static_dir: Path,
             scratch: Path) -> list[str]:
        if self.family == "parallio":
            common = ["--host", HOST, "--port", str(port), "--workers", str(workers),
                      "--parallel", self.host, "--io", self.engine, "--drain-timeout", "1"]
            head = [sys.executable, "-m", "parallio", "--log-level", "WARNING"]
            if purpose == STATIC:
                return [*head, "http-server", str(static_dir), *common]
            if self.app == ACCESS_LOG:
                return [*head, "serve", "parallio.bench.apps:BenchApp", *common,
                        "--access-log", str(scratch / f"access-{port}.log")]
            if self.app == WSGI:
                return [*head, "wsgi", "parallio.bench.apps:wsgi_app", *common]
            target = "parallio.bench.routes:app" if self.app == ROUTES \
                else "parallio.bench.apps:BenchApp"
            return [*head, "serve", target, *common]
        if self.family in ("asyncio", "uvloop"):
            argv = [sys.executable, str(PEER_SCRIPT), "--host", HOST, "--port", str(port),
                    "--workers", str(workers), "--static", str(static_dir)]
            return argv + ["--uvloop"] if self.family == "uvloop" else argv
        if self.family == "uvicorn":
            # apps.py as a top-level module: the peer does not import parallio.
            return [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR),
                    "--host", HOST, "--port", str(port), "--workers", str(workers),
                    "--http", "httptools", "--loop", "uvloop", "--lifespan", "on",
                    "--no-access-log", "--log-level", "warning", "--backlog", "4096",
                    "apps:asgi_app"]
        if self.family == "granian":
            argv = [sys.executable, "-m", "granian", "--interface", self.app,
                    "--host", HOST, "--port", str(port), "--workers", str(workers),
                    "--http", "1", "--no-ws", "--runtime-threads", "1",
                    "--backlog", "4096", "--log-level", "warning", "--no-access-log",
                    "--working-dir", str(BENCH_DIR)]
            if self.app == WSGI:
                # One thread runs the callable: more would only take turns
                # holding the GIL on one core.
                argv += ["--blocking-threads", "1"]
            return argv + [f"apps:{self.app}_app"]
        prefix = scratch / f"nginx-{port}"
        config = nginx_peer.write_config(prefix, HOST, port, static_dir, workers=workers)
        return nginx_peer.command(self.binary, prefix, config)


def parallio_contenders(all_combinations: bool = False) -> list[Contender]:
    """parallio's fast path on every host x engine, HttpServer routes and
    WSGI on the hosts and engines the scenarios measure (see
    :func:`measured_in`), each marked with why it cannot run here when it
    cannot."""
    from ..engine import uring_unavailable_reason
    from ..host import HOSTS

    default = default_parallio()
    app_problem = _import_problem("parallio.http.fastpath", "the HTTP fast path")
    uring_problem = uring_unavailable_reason() or _import_problem(
        "parallio.engine.uring", "the io_uring engine")
    contenders = []
    for app, label in ((FASTPATH, ""), (ROUTES, "routes "), (WSGI, "wsgi "),
                       (ACCESS_LOG, "access-log ")):
        for host_name, host_class in HOSTS.items():
            for engine in ("uring", "epoll"):
                combo = f"{host_name}/{engine}"
                if app != FASTPATH and not all_combinations and default is not None \
                        and host_name != default.partition("/")[0]:
                    continue
                if app == ACCESS_LOG and default is not None and combo != default:
                    continue  # its cost is a ratio to the same combination without it
                problem = host_class.unavailable_reason()
                if problem is None and engine == "uring":
                    problem = uring_problem
                contenders.append(Contender(
                    f"parallio {label}{combo}", "parallio", app, host_name, engine,
                    default=combo == default, app_skip=problem or app_problem,
                    static_skip=(problem or app_problem) if app == FASTPATH else "no files"))
    return contenders


def default_parallio() -> str | None:
    """``HOST/ENGINE``, what ``--parallel auto --io auto`` picks for the
    bench app on this Python, or None if it cannot choose."""
    from ..engine import choose_engine
    from ..host import choose_host

    try:
        engine, _why = choose_engine("auto")
        host, _why = choose_host("auto", ["parallio.bench.apps"], None)
    except Exception:  # noqa: BLE001 - no default, the report names the best
        return None
    return f"{host.name}/{engine}"


def _import_problem(module: str, what: str) -> str | None:
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run"
        return f"{what} ({module}) does not import: {type(exc).__name__}: {exc}"
    return None


def write_static_files(directory: Path) -> dict[str, str]:
    """The files every contender serves: deterministic bytes, so a wrong or
    truncated answer shows in its hash. Returns route -> sha256."""
    block = hashlib.sha256(b"parallio bench").digest() * 32  # 1 KiB
    digests = {}
    for route, (name, size) in STATIC_FILES.items():
        data = block * (size // len(block))
        (directory / name).write_bytes(data)
        digests[route] = hashlib.sha256(data).hexdigest()
    return digests


class ServerFailed(RuntimeError):
    """A server that exited or never answered; the message has its log."""


class RunningServer:
    """A contender's server process (a session of its own, so stopping it
    reaches every worker it forked), optionally pinned to ``cpus``."""

    def __init__(self, contender: Contender, argv: list[str], port: int, log_path: Path,
                 cpus: str | None, nice: int = 0) -> None:
        self.contender = contender
        self.port = port
        self.log_path = log_path
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        self._log: IO[bytes] = open(log_path, "wb")
        # taskset execs the server, so the pid is the server's own.
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if nice:
            set_session_priority(self.process.pid, nice)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the port takes connections."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(f"exited with status {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerFailed(f"not listening after {timeout:.0f} s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever the server left behind in its session
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# -- correctness ----------------------------------------------------------

@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(port: int, paths: list[str], timeout: float = 10.0) -> list[Response]:
    """GET each path in turn on one keep-alive connection."""
    responses = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        buffer = b""
        for path in paths:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            while b"\r\n\r\n" not in buffer:
                buffer += _recv(sock)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                buffer += _recv(sock)
            responses.append(Response(int(status_line.split()[1]), headers, buffer[:length]))
            buffer = buffer[length:]
    return responses


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError("the server closed the connection mid-response")
    return data


def expected_problem(route: str, response: Response, digests: dict[str, str]) -> str | None:
    """What is wrong with ``response`` to GET /route, or None."""
    if response.status != 200:
        return f"status {response.status}"
    if "date" not in response.headers:
        return "no Date header"
    content_type = response.headers.get("content-type", "")
    if route == "plaintext":
        ok = response.body == apps.PLAINTEXT_BODY and content_type.startswith("text/plain")
    elif route in ("json", "cpu"):
        try:
            document = json.loads(response.body)
        except ValueError:
            document = None
        wanted = apps.JSON_MESSAGE if route == "json" else apps.cpu_result()
        ok = document == wanted and content_type.startswith("application/json")
    else:
        ok = hashlib.sha256(response.body).hexdigest() == digests[route]
    if not ok:
        return f"wrong answer ({content_type or 'no Content-Type'}): {response.body[:60]!r}"
    return None


def check_answers(server: RunningServer, routes: list[str], digests: dict[str, str]) -> str | None:
    """Ask ``server`` each route twice on one connection (so keep-alive is
    checked too); None when every answer is right, else what was wrong."""
    asked = [route for route in routes for _ in range(2)]
    try:
        responses = http_get(server.port, [route_path(route) for route in asked])
    except (OSError, ValueError, IndexError) as exc:
        return f"no proper HTTP answer: {type(exc).__name__}: {exc}"
    for route, response in zip(asked, responses):
        problem = expected_problem(route, response, digests)
        if problem:
            return f"GET {route_path(route)}: {problem}"
    return None


def route_path(route: str) -> str:
    return "/" + (STATIC_FILES[route][0] if route in STATIC_FILES else route)


# -- how strictly each contender parses ---------------------------------------

def _malformed(name: str, lines: list[bytes], end: bytes = b"\r\n\r\n") -> tuple[str, bytes]:
    return name, b"\r\n".join(lines) + end


_HOST_LINE = b"Host: 127.0.0.1"
#: GET /plaintext heads that RFC 9112 makes invalid, each broken in one
#: place; parallio's parser answers every one with 400. A server that
#: serves one (200) does less validation per request than parallio does.
MALFORMED_HEADS: tuple[tuple[str, bytes], ...] = (
    ("bare LF line endings", b"GET /plaintext HTTP/1.1\nHost: 127.0.0.1\n\n"),
    _malformed("space before colon", [b"GET /plaintext HTTP/1.1", b"Host : 127.0.0.1"]),
    _malformed("obs-fold", [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"X-A: a", b" b"]),
    _malformed("field without colon", [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"X-A a"]),
    _malformed("NUL in a value", [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"X-A: a\x00b"]),
    _malformed("control character in a value",
               [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"X-A: a\x01b"]),
    _malformed("separator in a field name",
               [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"X(A): a"]),
    _malformed("no Host (HTTP/1.1)", [b"GET /plaintext HTTP/1.1", b"X-A: a"]),
    _malformed("two Host fields", [b"GET /plaintext HTTP/1.1", _HOST_LINE, _HOST_LINE]),
    _malformed("double space in the request line",
               [b"GET  /plaintext HTTP/1.1", _HOST_LINE]),
    _malformed("invalid version", [b"GET /plaintext HTTP/1.x", _HOST_LINE]),
    _malformed("byte 0xFF in the target", [b"GET /plaintext?\xff HTTP/1.1", _HOST_LINE]),
    _malformed("whitespace before the first field",
               [b"GET /plaintext HTTP/1.1", b" X-A: a", _HOST_LINE]),
    _malformed("Content-Length with a sign",
               [b"GET /plaintext HTTP/1.1", _HOST_LINE, b"Content-Length: +0"]),
)


def probe_strictness(port: int, timeout: float = 1.0) -> dict[str, list[str]]:
    """Send each of :data:`MALFORMED_HEADS` on a connection of its own, all
    at once: which the server refused (an error status, or closed without
    answering), served (2xx) or left waiting (no answer in ``timeout``)."""
    async def one(name: str, data: bytes) -> tuple[str, str]:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            return name, "refused"
        try:
            writer.write(data)
            line = await asyncio.wait_for(reader.readline(), timeout)
        except asyncio.TimeoutError:
            return name, "waited"
        except OSError:
            return name, "refused"
        finally:
            writer.close()
        parts = line.split()
        served = len(parts) > 1 and parts[1][:1] in (b"2", b"3")
        return name, "served" if served else "refused"

    async def every() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(name, data) for name, data in MALFORMED_HEADS))

    outcome: dict[str, list[str]] = {"refused": [], "served": [], "waited": []}
    for name, verdict in asyncio.run(every()):
        outcome[verdict].append(name)
    return outcome

