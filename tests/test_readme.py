"""The README's Python examples, run as written (the echo server's fixed port
aside, which a test must not take from whatever else runs here)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .conftest import recv_until
from .test_cli import start_server_process, stop

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _block_with(marker: str) -> str:
    found = [block for block in _python_blocks() if marker in block]
    assert len(found) == 1, f"one README example with {marker!r}"
    return found[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_echo_example_serves_and_says_where(tmp_path):
    code = _block_with("class Echo:")
    assert 'parallio.server("127.0.0.1", 8007)' in code
    port = _free_port()
    script = tmp_path / "echo_example.py"
    script.write_text(code.replace("8007", str(port)))
    process, logged_port, lines = start_server_process([sys.executable, str(script)],
                                                       cwd=str(tmp_path))
    assert logged_port == port
    assert any(f"serving <parallio server 127.0.0.1:{port}> (loopback only" in line
               for line in lines), lines
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"as written\n")
            assert recv_until(sock) == b"as written\n"
    finally:
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err


def test_the_services_example_runs_and_returns(tmp_path):
    script = tmp_path / "services_example.py"
    script.write_text(_block_with("parallio.submit_work("))
    result = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=110,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("{'multiples of 7': 142858} ticks: ")
    # The clock ticked with the shared greeting, unless the machine was so
    # slow that the one-shot timer came due before the first tick did.
    assert first.endswith("last: 'hello from a shared buffer'") or "ticks: 0" in first
    assert second == "[100, 100]"
    assert "[main] INFO parallio:" in result.stderr


def test_every_option_of_every_command_is_in_the_readme():
    from parallio.cli import build_parsers

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"(--[a-z][a-z0-9-]*)", readme))
    parser, parsers = build_parsers()
    missing = {}
    for name, command in [("", parser), *parsers.items()]:
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and option not in documented:
                    missing.setdefault(option, []).append(name or "(top level)")
    assert not missing, f"options the README does not name: {missing}"
