"""The command line, as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from .conftest import ENGINES, engine_skip_reason, recv_exactly, recv_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_cli(*args: str) -> tuple[subprocess.Popen, int]:
    """Start `python -m parallio ARGS --port 0` and return it with its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "parallio", *args, "--port", "0"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving <parallio server .*:(\d+)>", line)
        if match:
            return process, int(match.group(1))
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def test_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "parallio", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0
    for command in ("serve", "echo", "chargen", "daytime", "qotd", "discard", "echo-line"):
        assert command in result.stdout


@pytest.mark.parametrize("engine", ENGINES)
def test_echo_command_and_sigint(engine):
    if engine_skip_reason(engine):
        pytest.skip(engine_skip_reason(engine))
    process, port = start_cli("echo", "--workers", "2", "--io", engine)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping\n")
        assert recv_until(sock) == b"ping\n"
    code, err = stop(process, signal.SIGINT)
    assert code == 0, err


@pytest.mark.parametrize("parallel", ["processes", "threads", "auto"])
def test_sigterm_lets_inflight_sends_finish(parallel):
    process, port = start_cli("serve", "tests._protocols:BigResponse", "--workers", "1",
                              "--parallel", parallel)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"go")
        first = sock.recv(65536)
        process.send_signal(signal.SIGTERM)
        rest = recv_exactly(sock, 8 * 1024 * 1024 - len(first))
        assert first + rest == bytes(range(256)) * (8 * 1024 * 1024 // 256)
        assert sock.recv(1) == b""
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "draining" in err


def test_daytime_and_qotd():
    for command, check in (("daytime", b"GMT"), ("qotd", b"Alan Kay")):
        process, port = start_cli(command, "--workers", "1")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert check in data
        assert stop(process)[0] == 0


def test_unknown_protocol_fails_cleanly():
    result = subprocess.run(
        [sys.executable, "-m", "parallio", "serve", "no_such_module:Thing", "--port", "0",
         "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    assert "no_such_module" in result.stderr
