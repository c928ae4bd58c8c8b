"""Past one machine: real balancers in front of two parallio instances.

HAProxy (Debian's) relays to two instances with the PROXY protocol (one
v1, one v2); nginx proxies to two with X-Forwarded-For. The client
connects from 127.0.0.2 and the balancers from 127.0.0.3, which is the
only address the instances trust (--forwarded-allow-ips): the application
must see 127.0.0.2. Then one instance is stopped under load, and every
request still gets its answer, the balancer retrying it on the other.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .test_cli import start_server_process

CLIENT = "127.0.0.2"      # where the test's requests come from
BALANCER = "127.0.0.3"    # where the balancers connect to the instances from
APP = "tests._wsgi_apps:threaded"


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_instance(name: str, *options: str) -> tuple[subprocess.Popen, int]:
    os.environ["PARALLIO_TEST_INSTANCE"] = name
    try:
        process, port, lines = start_server_process(
            [sys.executable, "-m", "parallio", "wsgi", APP, "--port", "0", "--workers", "1",
             "--forwarded-allow-ips", BALANCER, *options])
    finally:
        del os.environ["PARALLIO_TEST_INSTANCE"]
    # Its log is read on, so that the process never blocks on a full pipe.
    process.log = lines  # type: ignore[attr-defined]
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    return process, port


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited: {process.stdout.read() if process.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


def get(port: int, path: str = "/whoami", headers: dict | None = None,
        connection: http.client.HTTPConnection | None = None) -> dict:
    own = connection is None
    if own:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                                source_address=(CLIENT, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)
    finally:
        if own:
            connection.close()


class Load:
    """Requests through the balancer on keep-alive connections from a few
    threads, until stopped; every answer (or failure) is kept."""

    def __init__(self, port: int, threads: int = 3) -> None:
        self.port = port
        self.answers: list[dict] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self, instance: str) -> int:
        with self._lock:
            return sum(answer["instance"] == instance for answer in self.answers)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                                source_address=(CLIENT, 0))
        while not self._stop.is_set():
            try:
                answer = get(self.port, "/whoami?sleep=0.005", connection=connection)
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                with self._lock:
                    self.failures.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                                        source_address=(CLIENT, 0))
                continue
            with self._lock:
                self.answers.append(answer)
        connection.close()


def stop_one_under_load(port: int, instances: dict[str, subprocess.Popen]) -> Load:
    """Load the balancer, stop instance "a" while the load runs, go on."""
    with Load(port) as load:
        deadline = time.monotonic() + 20
        while (load.count("a") < 30 or load.count("b") < 30) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load.count("a") >= 30 and load.count("b") >= 30, load.failures[:3]
        instances["a"].send_signal(signal.SIGTERM)
        assert instances["a"].wait(20) == 0
        served_by_b = load.count("b")
        deadline = time.monotonic() + 20
        while load.count("b") < served_by_b + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load.count("b") >= served_by_b + 100, load.failures[:3]
        served_by_a = load.count("a")
        time.sleep(0.3)
        assert load.count("a") == served_by_a   # only b answers now
    return load


@pytest.fixture
def instances_pair(request):
    started: dict[str, tuple[subprocess.Popen, int]] = {}
    options = getattr(request, "param", ())
    try:
        for name in ("a", "b"):
            started[name] = start_instance(name, *options)
        yield started
    finally:
        for process, _port in started.values():
            stop_process(process)


_HAPROXY = """\
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
frontend web
    bind 127.0.0.1:{port}
    default_backend apps
backend apps
    balance roundrobin
    server a 127.0.0.1:{a} send-proxy-v2 check-send-proxy source {source} check inter 300ms fall 1 rise 2
    server b 127.0.0.1:{b} send-proxy check-send-proxy source {source} check inter 300ms fall 1 rise 2
"""


@pytest.mark.skipif(_find("haproxy") is None, reason="needs HAProxy (scripts/peers.sh installs it)")
@pytest.mark.parametrize("instances_pair", [("--proxy-protocol",)], indirect=True)
def test_haproxy_with_the_proxy_protocol(instances_pair, tmp_path: Path):
    port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(_HAPROXY.format(port=port, a=instances_pair["a"][1],
                                      b=instances_pair["b"][1], source=BALANCER))
    haproxy = subprocess.Popen([_find("haproxy"), "-db", "-f", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, haproxy, "haproxy")
        answers = [get(port) for _ in range(6)]
        assert {answer["instance"] for answer in answers} == {"a", "b"}, (
            "".join(instances_pair["a"][0].log))
        assert {answer["remote_addr"] for answer in answers} == {CLIENT}
        # The instances take a PROXY header from the balancer only.
        with socket.create_connection(("127.0.0.1", instances_pair["a"][1]), timeout=5) as sock:
            sock.sendall(b"PROXY TCP4 6.6.6.6 127.0.0.1 1 2\r\nGET /whoami HTTP/1.1\r\n\r\n")
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass  # cut off without an answer either way
        load = stop_one_under_load(port, {"a": instances_pair["a"][0]})
        assert load.failures == []
        assert {answer["remote_addr"] for answer in load.answers} == {CLIENT}
    finally:
        stop_process(haproxy)


_NGINX = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    upstream apps {{
        server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://apps;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_bind {source};
        }}
    }}
}}
"""


@pytest.mark.skipif(_find("nginx") is None, reason="needs nginx (scripts/peers.sh installs it)")
def test_nginx_with_forwarded_fields(instances_pair, tmp_path: Path):
    port = _free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(_NGINX.format(prefix=tmp_path, port=port, a=instances_pair["a"][1],
                                    b=instances_pair["b"][1], source=BALANCER,
                                    user="user root;" if os.geteuid() == 0 else ""))
    nginx = subprocess.Popen([_find("nginx"), "-p", str(tmp_path), "-c", str(config),
                              "-e", str(tmp_path / "error.log")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, nginx, "nginx")
        answers = [get(port) for _ in range(6)]
        assert {answer["instance"] for answer in answers} == {"a", "b"}
        assert {answer["remote_addr"] for answer in answers} == {CLIENT}
        # A client's own X-Forwarded-For is left of nginx's entry: not believed.
        assert get(port, headers={"X-Forwarded-For": "6.6.6.6"})["remote_addr"] == CLIENT
        # Straight to an instance, a client is not a trusted proxy.
        direct = http.client.HTTPConnection("127.0.0.1", instances_pair["b"][1], timeout=10,
                                            source_address=(CLIENT, 0))
        assert get(0, headers={"X-Forwarded-For": "6.6.6.6"},
                   connection=direct)["remote_addr"] == CLIENT
        direct.close()
        load = stop_one_under_load(port, {"a": instances_pair["a"][0]})
        assert load.failures == []
        assert {answer["remote_addr"] for answer in load.answers} == {CLIENT}
    finally:
        stop_process(nginx)
