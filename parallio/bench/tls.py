"""TLS on one core: parallio's TLS layer vs nginx with the same certificate.

    python -m parallio.bench.tls [--duration 5] [--rounds 3] [--connections 64]

Each contender serves ``/plaintext`` (``Hello, World!``) with one worker
pinned to CPU 0: parallio's HTTP fast path (``parallio.bench.apps:BenchApp``)
with ``--certfile/--keyfile``, on the host and engine ``auto`` picks, and
nginx (one worker, ``return 200``: no application code at all) with the
same ECDSA P-256 certificate, both over TLS 1.3 (AES-256-GCM, what both
pick). The same two serve plain HTTP as well, so the cost TLS adds to each
shows beside the comparison. wrk, pinned to CPU 1, loads ``/plaintext``
over keep-alive connections with request heads that all differ
(``lua/heads.lua``); the handshakes happen once per connection, so the
figure is the steady cost of encrypting and decrypting records.

The figure is requests per server-CPU-second: requests wrk completed
divided by the CPU time (user + system) of the server's process tree over
the run. Contenders take turns, round after round (the order rotating);
each figure is the median of its rounds. Not a test: only the ratios
between contenders of one run mean anything. Needs wrk, nginx (Debian's
nginx-light) and the openssl command.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .apps import PLAINTEXT_BODY
from .proc import cpu_times, process_tree
from .tools import find_binary
from .wrk import run_wrk

ROOT = Path(__file__).resolve().parents[2]

_NGINX = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections 4096;
    use epoll;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    server {{
        listen 127.0.0.1:{port} {ssl} backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /plaintext {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "parallio" or "nginx"
    tls: bool


CONTENDERS = (
    Contender("parallio TLS", "parallio", True),
    Contender("nginx TLS", "nginx", True),
    Contender("parallio plain", "parallio", False),
    Contender("nginx plain", "nginx", False),
)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, contender: Contender, scratch: Path, cert: Path, key: Path,
                 nginx: str | None) -> None:
        self.contender = contender
        self.port = port = free_port()
        if contender.kind == "parallio":
            argv = [sys.executable, "-m", "parallio", "--log-level", "WARNING", "serve",
                    "parallio.bench.apps:BenchApp", "--port", str(port), "--workers", "1"]
            if contender.tls:
                argv += ["--certfile", str(cert), "--keyfile", str(key)]
        else:
            assert nginx is not None
            prefix = scratch / f"nginx-{port}"
            prefix.mkdir()
            config = prefix / "nginx.conf"
            config.write_text(_NGINX.format(
                prefix=prefix, port=port, ssl="ssl" if contender.tls else "", cert=cert, key=key,
                body=PLAINTEXT_BODY.decode(), user="user root;" if os.geteuid() == 0 else ""))
            argv = [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
        self.process = subprocess.Popen(["taskset", "-c", "0", *argv], cwd=ROOT,
                                        env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                        stdout=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"{'https' if self.contender.tls else 'http'}://127.0.0.1:{self.port}/plaintext"

    def _wait_ready(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.contender.name} exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                    sock = (context.wrap_socket(raw, server_hostname="127.0.0.1")
                            if self.contender.tls else raw)
                    sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
                    if sock.recv(4096).endswith(PLAINTEXT_BODY):
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.contender.name} did not answer within 60 s")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def measure(server: Server, wrk: str, args: argparse.Namespace) -> float:
    """Requests per server-CPU-second, over one wrk run."""
    tree = process_tree(server.process.pid)
    before = cpu_times(tree)
    result = run_wrk(wrk, server.url, connections=args.connections, duration_s=args.duration,
                     cpus="1")
    used = (cpu_times(tree) - before).total
    if result.errors or result.non_2xx:
        raise RuntimeError(f"{server.contender.name}: {result.errors} socket errors, "
                           f"{result.non_2xx} non-2xx answers")
    return result.requests / used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    wrk, nginx = find_binary("wrk"), find_binary("nginx")
    missing = [name for name, path in (("wrk", wrk), ("nginx", nginx),
                                       ("openssl", find_binary("openssl"))) if path is None]
    if missing:
        print(f"needs {', '.join(missing)} (apt-get install wrk nginx-light openssl)",
              file=sys.stderr)
        return 2
    assert wrk is not None
    figures: dict[str, list[float]] = {contender.name: [] for contender in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="parallio-bench-tls-") as scratch_dir:
        scratch = Path(scratch_dir)
        cert, key = make_certificate(scratch)
        servers = [Server(contender, scratch, cert, key, nginx) for contender in CONTENDERS]
        try:
            for server in servers:  # warm-up: connections, caches, the JIT-less paths
                run_wrk(wrk, server.url, connections=args.connections, duration_s=1, cpus="1")
            for round_index in range(args.rounds):
                shift = round_index % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    value = measure(server, wrk, args)
                    figures[server.contender.name].append(value)
                    print(f"round {round_index + 1}  {server.contender.name:<16} "
                          f"{value:10.0f} req/CPU-s", flush=True)
        finally:
            for server in servers:
                server.stop()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(f"\nmedian of {args.rounds} rounds, {args.duration} s each, {args.connections} "
          "keep-alive connections, 1 server core (CPU 0), wrk on CPU 1")
    for contender in CONTENDERS:
        peer = "nginx TLS" if contender.tls else "nginx plain"
        print(f"{contender.name:<16} {medians[contender.name]:10.0f} req/CPU-s  "
              f"{medians[contender.name] / medians[peer]:5.2f}x {peer}")
    for kind in ("parallio", "nginx"):
        print(f"TLS costs {kind} {1 - medians[f'{kind} TLS'] / medians[f'{kind} plain']:.0%} "
              "of its plain-HTTP requests per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
