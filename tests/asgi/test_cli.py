"""``python -m parallio asgi`` (the ``asgi`` command) as a user runs it: a
real process, real requests, a signal to stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import host_skip_reason

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "parallio", "asgi", *args, "--port", "0"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def wait_serving(process: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read()


@pytest.mark.parametrize("parallel", ["processes", "threads", "interpreters"])
def test_serves_with_one_lifespan_per_worker_and_stops_on_sigterm(parallel):
    reason = host_skip_reason(parallel)
    if reason:
        pytest.skip(reason)
    process = start("tests.asgi._cli_apps:whoami", "--workers", "2", "--parallel", parallel)
    try:
        port = wait_serving(process)
        answers = {get(port, "/") for _ in range(40)}
        for answer in answers:
            served_by, started_in = answer.split()
            assert served_by == started_in  # the lifespan ran in the worker that serves
        # 40 connections spread by SO_REUSEPORT: both workers serve (all
        # 40 on one of the two would happen once in 2**39 runs).
        assert len({answer.split()[0] for answer in answers}) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_failing_startup_stops_the_server_with_the_apps_message():
    process = start("tests.asgi._cli_apps:failing_startup", "--workers", "2")
    try:
        assert process.wait(60) == 1
        errors = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert "cannot reach the database" in errors
    assert "Traceback" not in errors


@pytest.mark.parametrize("app, message", [
    ("no_such_module_here:app", "no module 'no_such_module_here'"),
    ("tests.asgi._cli_apps:missing", "has no attribute 'missing'"),
    ("tests.asgi._cli_apps", "expected MODULE:ATTRIBUTE"),
])
def test_bad_application_names_are_one_line_errors(app, message):
    process = start(app, "--workers", "1", "--parallel", "threads")
    assert process.wait(60) == 1
    errors = process.stderr.read()
    process.stderr.close()
    assert message in errors and "Traceback" not in errors


def test_the_command_registers_with_python_m_parallio():
    from parallio.cli import COMMANDS, build_parser

    assert "asgi" in COMMANDS
    args = build_parser().parse_args(["asgi", "m:app", "--root-path", "/api", "--request-timeout",
                                      "30", "--io", "epoll"])
    assert (args.app, args.root_path, args.request_timeout, args.io) == ("m:app", "/api", 30.0,
                                                                         "epoll")
