"""The contenders: how each is started, stopped and checked for correct
answers before any load."""

from __future__ import annotations

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
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "asyncio_http.py"
STATIC_NAME = "1mb.bin"
STATIC_SIZE = 1 << 20

#: What a contender is started to serve: the three app routes, or files.
APP, STATIC = "app", "static"


@dataclass(frozen=True)
class Contender:
    """One server under test. ``family`` is parallio, asyncio, uvloop or
    nginx; parallio contenders also name their host and engine."""

    name: str
    family: str
    host: str = ""
    engine: str = ""
    #: The program to run, for peers that are not Python (nginx).
    binary: str = ""
    #: Why this contender cannot serve APP / STATIC here (None: it can).
    app_skip: str | None = None
    static_skip: str | None = None

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
            if purpose == APP:
                return [*head, "serve", "parallio.bench.apps:BenchApp", *common]
            return [*head, "http-server", str(static_dir), *common]
        if self.family in ("asyncio", "uvloop"):
            argv = [sys.executable, str(PEER_SCRIPT), "--host", HOST, "--port", str(port),
                    "--workers", str(workers), "--static", str(static_dir)]
            return argv + ["--uvloop"] if self.family == "uvloop" else argv
        prefix = scratch / f"nginx-{port}"
        config = nginx_peer.write_config(prefix, HOST, port, static_dir, workers=workers)
        return nginx_peer.command(self.binary, prefix, config)


def parallio_contenders() -> list[Contender]:
    """parallio on every host x engine, each marked with why it cannot run
    here when it cannot."""
    from ..engine import uring_unavailable_reason
    from ..host import HOSTS

    app_problem = _import_problem("parallio.http.fastpath", "the HTTP fast path")
    static_problem = _http_server_problem()
    uring_problem = uring_unavailable_reason() or _import_problem(
        "parallio.engine.uring", "the io_uring engine")
    contenders = []
    for host_name, host_class in HOSTS.items():
        for engine in ("uring", "epoll"):
            problem = host_class.unavailable_reason()
            if problem is None and engine == "uring":
                problem = uring_problem
            contenders.append(Contender(
                f"parallio {host_name}/{engine}", "parallio", host_name, engine,
                app_skip=problem or app_problem, static_skip=problem or static_problem))
    return contenders


def default_parallio() -> str | None:
    """The name of the contender ``--parallel auto --io auto`` picks for
    the bench app on this Python, or None if it cannot choose."""
    from ..engine import choose_engine
    from ..host import choose_host

    try:
        engine, _why = choose_engine("auto")
        host, _why = choose_host("auto", ["parallio.bench.apps"], None)
    except Exception:  # noqa: BLE001 - no default, the report names the best
        return None
    return f"parallio {host.name}/{engine}"


def _import_problem(module: str, what: str) -> str | None:
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run"
        return f"{what} ({module}) does not import: {type(exc).__name__}: {exc}"
    return None


def _http_server_problem() -> str | None:
    result = subprocess.run([sys.executable, "-m", "parallio", "http-server", "--help"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return "`python -m parallio http-server` is not available yet"
    return None


def write_static_file(directory: Path) -> Path:
    """The 1 MiB file every contender serves: deterministic bytes, so a
    wrong or truncated answer shows in its hash."""
    path = directory / STATIC_NAME
    block = hashlib.sha256(b"parallio bench").digest() * 32  # 1 KiB
    path.write_bytes(block * (STATIC_SIZE // len(block)))
    return path


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


def expected_problem(route: str, response: Response, static_digest: str) -> str | None:
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
        ok = hashlib.sha256(response.body).hexdigest() == static_digest
    if not ok:
        return f"wrong answer ({content_type or 'no Content-Type'}): {response.body[:60]!r}"
    return None


def check_answers(server: RunningServer, routes: list[str], static_digest: str) -> str | None:
    """Ask ``server`` each route twice on one connection (so keep-alive is
    checked too); None when every answer is right, else what was wrong."""
    asked = [route for route in routes for _ in range(2)]
    try:
        responses = http_get(server.port, [route_path(route) for route in asked])
    except (OSError, ValueError, IndexError) as exc:
        return f"no proper HTTP answer: {type(exc).__name__}: {exc}"
    for route, response in zip(asked, responses):
        problem = expected_problem(route, response, static_digest)
        if problem:
            return f"GET {route_path(route)}: {problem}"
    return None


def route_path(route: str) -> str:
    return "/" + (STATIC_NAME if route == "static" else route)

