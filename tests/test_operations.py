"""Operations (issue 10): reloads, adding and removing workers, recycling
and limits, tested on real sockets under load."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from parallio import Runtime, Supervision
from parallio.cli import build_parser

from ._http_client import Client
from ._load import Load
from .test_cli import ROOT, start_cli, start_server_process, stop
from .test_faults import address, layout, running  # noqa: F401 (layout: the fixture)

A = "tests._supervision_apps:"


def layout_options(layout: str, workers: int = 2) -> list[str]:
    if layout == "groups":
        return ["--processes", str(workers), "--workers", "1"]
    return ["--parallel", layout, "--workers", str(workers)]


def sample(port: int, path: str, count: int = 20) -> set[str]:
    """The answers to ``count`` requests, each on a new connection."""
    answers = set()
    for _ in range(count):
        with Client(("127.0.0.1", port)) as client:
            answers.add(client.get(path, [("Connection", "close")]).body.decode())
    return answers


def wait_until(condition, timeout: float = 20.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- reloads --------------------------------------------------------------------------

def test_sighup_reloads_under_load_without_a_failed_request(layout, tmp_path, monkeypatch):
    """SIGHUP: fresh workers (the application imported anew, except in the
    threads host, which shares its modules) take over the listeners, the old
    ones drain; not one request fails meanwhile."""
    version = tmp_path / "version"
    version.write_text("1")
    monkeypatch.setenv("PARALLIO_TEST_VERSION_FILE", str(version))
    process, port = start_cli("serve", A + "Version", *layout_options(layout), "--io", "epoll")
    try:
        before = sample(port, "/version")
        assert {answer.split()[1] for answer in before} == {"1"}
        with Load(("127.0.0.1", port)) as load:
            load.wait_for(200)
            version.write_text("2")
            process.send_signal(signal.SIGHUP)
            if layout == "threads":
                old_threads = {answer.split()[2] for answer in before}
                wait_until(lambda: not {answer.split()[2] for answer in sample(port, "/version")}
                           & old_threads, what="fresh workers")
            else:
                wait_until(lambda: {answer.split()[1] for answer in sample(port, "/version")}
                           == {"2"}, what="workers of the new version")
            load.wait_for(200)
        assert load.failures == [], load.failures[:5]
        assert {answer.split()[0] for answer in sample(port, "/version", 40)} == {"1", "2"}
    finally:
        status, err = stop(process)
    assert status == 0, err
    assert "reloading" in err


def test_a_reload_whose_new_workers_fail_keeps_the_old_ones(tmp_path, monkeypatch):
    version = tmp_path / "version"
    version.write_text("1")
    monkeypatch.setenv("PARALLIO_TEST_VERSION_FILE", str(version))
    process, port = start_cli("serve", A + "Version", "--parallel", "processes",
                              "--workers", "2", "--io", "epoll")
    try:
        version.unlink()  # the fresh workers' import fails
        process.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert {answer.split()[1] for answer in sample(port, "/version")} == {"1"}
    finally:
        status, err = stop(process)
    assert status == 0, err
    assert "failed to start (reload), so the one serving keeps serving" in err


def test_sigttin_and_sigttou_add_and_remove_workers(layout):
    process, port = start_cli("serve", A + "Version", *layout_options(layout), "--io", "epoll")
    try:
        with Load(("127.0.0.1", port)) as load:
            load.wait_for(100)
            process.send_signal(signal.SIGTTIN)
            wait_until(lambda: "3" in {a.split()[0] for a in sample(port, "/version")},
                       what="a third worker")
            # One at a time: a signal sent again before it is handled is one.
            for left in ({"1", "2"}, {"1"}):
                process.send_signal(signal.SIGTTOU)
                wait_until(lambda: {a.split()[0] for a in sample(port, "/version", 30)} == left,
                           what=f"workers {left} left")
            load.wait_for(100)
        # A removed worker's listener closes (after it took its backlog):
        # connections made in that instant may be reset, as at a stop.
        assert len(load.failures) <= 2, load.failures
    finally:
        status, err = stop(process)
    assert status == 0, err


def test_reload_restarts_the_server_when_its_source_changes(tmp_path):
    module = tmp_path / "reloaded_app.py"

    def write(text: str) -> None:
        module.write_text(text)
        # A new mtime even on coarse clocks.
        stamp = time.time_ns() + 2_000_000_000
        os.utime(module, ns=(stamp, stamp))

    write("class Hello:\n    def data_received(self, transport, data):\n"
          "        return b'v1\\n'\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process, _port, _lines = start_server_process(
        [sys.executable, "-m", "parallio", "serve", "reloaded_app:Hello", "--reload",
         "--port", str(port), "--workers", "1", "--parallel", "processes", "--io", "epoll"],
        cwd=str(tmp_path))

    def answer() -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"?\n")
                return sock.recv(100)
        except OSError:
            return None

    try:
        assert answer() == b"v1\n"
        write("class Hello:\n    def data_received(self, transport, data):\n"
              "        return b'v2\\n'\n")
        wait_until(lambda: answer() == b"v2\n", what="the new code")
        write("class Hello(:\n")  # a syntax error: the server cannot start...
        wait_until(lambda: answer() is None, what="the broken server to stop")
        write("class Hello:\n    def data_received(self, transport, data):\n"
              "        return b'v3\\n'\n")
        wait_until(lambda: answer() == b"v3\n", what="the fixed code")  # ...until fixed
    finally:
        status, err = stop(process)
    assert status == 0, err
    assert "reloaded_app.py changed; restarting" in err
    assert answer() is None  # the child is gone too


def test_without_reload_options():
    from parallio.cli.reload import without_reload_options

    assert without_reload_options(["serve", "m:C", "--reload", "--reload-dir", "src",
                                   "--reload-dir=lib", "--port", "9"]) == [
        "serve", "m:C", "--port", "9"]


# -- recycling and limits ----------------------------------------------------------------

def served_per_worker(load: Load) -> dict[str, int]:
    """Answers per worker identity (pid:thread)."""
    counts: dict[str, int] = {}
    for body, count in load.answers.items():
        identity = body.split()[1].decode()
        counts[identity] = counts.get(identity, 0) + count
    return counts


def test_max_requests_replaces_workers_without_a_failed_request(layout):
    with running("Version", layout, max_requests=150, max_requests_jitter=30) as runtime:
        with Load(address(runtime)) as load:
            # Each replaced once (a successor starts while its predecessor
            # still serves: in the processes host that takes a second or two).
            wait_until(lambda: len(served_per_worker(load)) >= 4, timeout=60,
                       what="replaced workers")
            load.wait_for(100)
    assert load.failures == [], load.failures[:5]
    served = served_per_worker(load)
    # None was replaced before its limit: only the two serving at the end
    # (or starting to) may have served fewer.
    assert sum(1 for count in served.values() if count < 150) <= 2, served


def test_max_rss_replaces_a_worker_that_grows():
    with running("Version", "processes", workers=1) as probe:
        with Client(address(probe)) as client:
            pid = int(client.get("/who").body.split()[1].split(b":")[0])
        baseline = _rss_mb(pid)
    limit = int(baseline) + 40
    with running("Version", "processes", workers=2, max_rss=limit << 20) as runtime:
        with Load(address(runtime), keep_alive=2, fresh=2) as load:
            load.wait_for(100)
            old = {info["worker"]: info["pid"] for info in runtime.worker_info}
            with Client(address(runtime)) as client:
                grown = client.get("/grow?60").body.split()[0].decode()
            wait_until(lambda: {info["worker"]: info["pid"] for info in runtime.worker_info}
                       [int(grown)] != old[int(grown)], what="the grown worker's replacement")
            load.wait_for(100)
        assert load.failures == [], load.failures[:5]
        survivor = 3 - int(grown)
        assert {info["worker"]: info["pid"] for info in runtime.worker_info}[survivor] \
            == old[survivor]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_max_rss_needs_a_process_per_worker():
    from parallio.runtime import make_server

    endpoint = make_server("127.0.0.1", 0)
    endpoint.protocol = __import__("parallio").protocol_ref(A + "Web")
    with pytest.raises(ValueError, match="--max-rss needs the processes host"):
        Runtime([endpoint], workers=1, parallel="threads", supervision=Supervision(max_rss=1))
    endpoint.placeholder.close()


def test_limit_concurrency_answers_503_beyond_it(layout):
    with running("Version", layout, workers=1, limit_concurrency=2) as runtime:

        def status_of_a_new_connection() -> int:
            with Client(address(runtime)) as client:
                return client.get("/who").status

        first, second = Client(address(runtime)), Client(address(runtime))
        assert first.get("/who").status == second.get("/who").status == 200
        with Client(address(runtime)) as third:
            reply = third.get("/who")
            assert reply.status == 503
            assert reply.headers["connection"] == "close"
        first.sock.close()
        wait_until(lambda: status_of_a_new_connection() == 200, what="room for a connection")
        second.sock.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read backlogs")
def test_backlog_sets_each_listeners_queue():
    process, port = start_cli("serve", A + "Web", "--workers", "2", "--parallel", "processes",
                              "--io", "epoll", "--backlog", "7")
    try:
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                 text=True, check=True).stdout
    finally:
        stop(process)
    queues = [int(re.split(r"\s+", line.strip())[2]) for line in listing.splitlines()]
    assert queues == [7, 7], listing


def test_timeout_graceful_shutdown_is_the_drain_timeout():
    parser = build_parser()
    assert parser.parse_args(["serve", "m:C"]).drain_timeout == 10.0
    assert parser.parse_args(["serve", "m:C", "--timeout-graceful-shutdown", "3"]) \
        .drain_timeout == 3.0


@pytest.mark.parametrize("option", [["--workers", "2", "--max-requests", "0"],
                                    ["--worker-timeout", "-1"],
                                    ["--max-requests-jitter", "-3"]])
def test_bad_supervision_values_name_the_option(option):
    result = subprocess.run([sys.executable, "-m", "parallio", "serve", "m:C", *option],
                            capture_output=True, text=True, timeout=30, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 2
    assert option[-2] in result.stderr
