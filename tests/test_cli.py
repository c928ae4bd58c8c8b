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


def start_server_process(command: list[str], cwd: str = ROOT,
                         serving: str = r"serving <parallio server .*:(\d+)>"
                         ) -> tuple[subprocess.Popen, int, list[str]]:
    """Start a command that serves, and return it with its port and the
    stderr lines it printed up to its "serving" log line (``serving``, a
    pattern whose group is the port)."""
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(serving, line)
        if match:
            return process, int(match.group(1)), lines
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


def start_cli(*args: str) -> tuple[subprocess.Popen, int]:
    """Start `python -m parallio ARGS --port 0` and return it with its port."""
    process, port, _lines = start_server_process(
        [sys.executable, "-m", "parallio", *args, "--port", "0"])
    return process, port


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


MAIN_SCRIPT = '''
import logging, os, sys
import parallio

class Who:
    def data_received(self, transport, data):
        return f"{parallio.thread_seq_id()} {os.getpid()}\\n"

sys.stderr.write(f"imported as {__name__}\\n")  # one write: workers share stderr
sys.stderr.flush()
if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    server = parallio.server("127.0.0.1", 0)
    parallio.register(transport=server, protocol=Who)
    parallio.run(workers=2, parallel=sys.argv[1], io="epoll")
'''


@pytest.mark.parametrize("parallel", ["threads", "processes", "interpreters"])
def test_protocol_defined_in_a_main_script(parallel, tmp_path):
    from parallio.host import InterpretersHost
    if parallel == "interpreters" and InterpretersHost.unavailable_reason():
        pytest.skip(InterpretersHost.unavailable_reason())
    script = tmp_path / "server_script.py"
    script.write_text(MAIN_SCRIPT)
    process, port, lines = start_server_process([sys.executable, str(script), parallel],
                                                cwd=str(tmp_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"?")
        seq, pid = recv_until(sock).split()
    assert seq in (b"1", b"2")
    assert (int(pid) == process.pid) == (parallel != "processes")
    code, err = stop(process)
    assert code == 0, err
    # Workers outside the threads host loaded the script under another name,
    # so its __main__ block ran once, in the main process.
    output = "".join(lines) + err
    expected_workers = 0 if parallel == "threads" else 2
    assert output.count("imported as __main__") == 1
    assert output.count("imported as __parallio_main__") == expected_workers


def test_readme_serve_command():
    """`scripts/serve` (the README's main job) serves the TechEmpower
    endpoints and stops cleanly."""
    process, port, _lines = start_server_process(["bash", "scripts/serve", "--port", "0"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"Hello, World!")
    finally:
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err
