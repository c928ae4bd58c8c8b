"""``python -m parallio wiki build`` and ``python -m parallio wiki``, as a
user runs them: real processes, a real server, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from .._http_client import Client
from ..test_cli import ROOT, start_server_process, stop
from .dictd_files import write_dictd


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parallio", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def test_build_then_serve(tmp_path):
    index_path, _text_path = write_dictd(tmp_path / "sample")
    data = tmp_path / "data"
    built = run_cli("wiki", "build", "--source", str(index_path), "--data", str(data))
    assert built.returncode == 0, built.stderr
    assert "unpacking sample.dict.dz: 100%" in built.stderr
    assert "wiki: 14 headwords, 15 entries" in built.stderr
    process, port, started = start_server_process(
        [sys.executable, "-m", "parallio", "wiki", "--data", str(data), "--workers", "2",
         "--port", "0"])
    try:
        with Client(("127.0.0.1", port)) as client:
            reply = client.get("/search?q=zy")
            assert reply.status == 200
            assert [r["headword"] for r in json.loads(reply.body)["results"]] == ["zymurgy"]
            assert client.get("/entry/Zymurgy").body.startswith(b"Zymurgy, n.")
    finally:
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err
    assert any("wiki of 14 headwords" in line and "Sample Dictionary of Tests" in line
               for line in started)


def test_errors_say_what_to_do(tmp_path):
    missing = run_cli("wiki")
    assert missing.returncode == 1
    assert "--data DIR is required" in missing.stderr
    unbuilt = run_cli("wiki", "--data", str(tmp_path), "--port", "0")
    assert unbuilt.returncode == 1
    assert "headwords.index is missing: build the data first" in unbuilt.stderr
    no_source = run_cli("wiki", "build", "--source", str(tmp_path / "none"), "--data",
                        str(tmp_path / "data"))
    assert no_source.returncode == 1
    assert "no dictd database there" in no_source.stderr
    assert "Traceback" not in missing.stderr + unbuilt.stderr + no_source.stderr


def test_help():
    listed = run_cli("--help")
    assert "wiki" in listed.stdout
    assert "--source" in run_cli("wiki", "build", "--help").stdout
    assert "--workers" in run_cli("wiki", "--help").stdout
