"""TLS, proxies and the WSGI pool from the command line, with real clients:
curl --cacert, curl --haproxy-protocol, and option errors that name the
option."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ._tls import KEY_PASSWORD
from .test_cli import ROOT, start_cli, start_server_process, stop

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", *args],
                          capture_output=True, timeout=30)


def tls_options(certificates, encrypted: bool = False) -> list[str]:
    if encrypted:
        return ["--certfile", certificates.server_cert, "--keyfile",
                certificates.server_key_encrypted, "--keyfile-password", KEY_PASSWORD]
    return ["--certfile", certificates.server_cert, "--keyfile", certificates.server_key]


@needs_curl
@pytest.mark.parametrize("command", [
    ["wsgi", "tests._wsgi_apps:threaded", "--threads", "2"],
    ["http-server", "tests"],
    ["serve", "tests._http_apps:origin_app"],
])
def test_https_with_curl(command, certificates):
    process, port = start_cli(*command, *tls_options(certificates, encrypted=True),
                              "--workers", "1")
    try:
        path = {"wsgi": "/fast", "http-server": "/_tls.py", "serve": "/origin"}[command[0]]
        result = curl("--cacert", certificates.ca, "--include", "--http1.1",
                      f"https://localhost:{port}{path}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
        if command[0] == "http-server":
            with open(os.path.join(ROOT, "tests", "_tls.py"), "rb") as file:
                assert result.stdout.endswith(file.read())
        if command[0] == "serve":
            assert json.loads(result.stdout.partition(b"\r\n\r\n")[2])["scheme"] == "https"
        # Plain HTTP to the TLS port: a plain-text 400 that says why.
        result = curl(f"http://127.0.0.1:{port}{path}")
        assert b"use an https:// URL" in result.stdout
        # A client that does not trust the certificate refuses it.
        result = curl("--cacert", certificates.other_ca, f"https://localhost:{port}{path}")
        assert result.returncode == 60  # curl: peer certificate cannot be authenticated
    finally:
        code, err = stop(process)
    assert code == 0, err


@needs_curl
def test_client_certificates_with_curl(certificates):
    process, port = start_cli("wsgi", "tests._wsgi_apps:threaded", *tls_options(certificates),
                              "--ca-certs", certificates.ca, "--cert-reqs", "required",
                              "--workers", "1")
    try:
        result = curl("--cacert", certificates.ca, "--cert", certificates.client_cert,
                      "--key", certificates.client_key, f"https://localhost:{port}/environ")
        assert result.returncode == 0, result.stderr
        environ = json.loads(result.stdout)
        assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert environ["SSL_CLIENT_S_DN"].startswith("CN=client one,")
        result = curl("--cacert", certificates.ca, f"https://localhost:{port}/environ")
        assert result.returncode != 0   # no certificate: the handshake fails
    finally:
        code, err = stop(process)
    assert code == 0, err


@needs_curl
def test_proxy_protocol_with_curl():
    process, port = start_cli("wsgi", "tests._wsgi_apps:threaded", "--proxy-protocol",
                              "--workers", "1")
    try:
        # curl sends "PROXY TCP4 127.0.0.1 127.0.0.1 <its port> <port>": the
        # application sees the header's client (here the same address).
        result = curl("--haproxy-protocol", f"http://127.0.0.1:{port}/environ")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["REMOTE_ADDR"] == "127.0.0.1"
        result = curl(f"http://127.0.0.1:{port}/environ")   # no header: cut off
        assert result.returncode != 0
    finally:
        code, err = stop(process)
    assert code == 0, err


@pytest.mark.parametrize("args, message", [
    (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
    (["--certfile", "/nope.pem"], "no such file '/nope.pem'"),
    (["--certfile", "CERT", "--cert-reqs", "required"], "needs ca_certs (--ca-certs)"),
    (["--certfile", "CERT", "--cert-reqs", "sometimes"], "use none, optional or required"),
    (["--certfile", "CERT", "--keyfile", "ENCRYPTED"], "is encrypted: give its password"),
    (["--forwarded-allow-ips", "10.0.0.0/40"], "forwarded-allow-ips: '10.0.0.0/40'"),
    (["--threads", "0"], "argument --threads: 0: must be at least 1"),
    (["--request-timeout", "-1"], "argument --request-timeout: -1"),
])
def test_option_errors_name_the_option(args, message, certificates):
    args = [{"CERT": certificates.server_cert,
             "ENCRYPTED": certificates.server_key_encrypted}.get(arg, arg) for arg in args]
    result = subprocess.run([sys.executable, "-m", "parallio", "wsgi", "tests._wsgi_apps:threaded",
                             "--port", "0", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@needs_curl
def test_asgi_over_tls_with_curl(certificates):
    process, port = start_asgi("examples.asgi_plain_app:app", *tls_options(certificates),
                               "--workers", "1")
    try:
        result = curl("--cacert", certificates.ca, f"https://localhost:{port}/")
        assert result.returncode == 0, result.stderr
    finally:
        code, err = stop(process)
    assert code == 0, err


def start_asgi(*args: str):
    """The asgi command announces its port in its own words."""
    process, port, _lines = start_server_process(
        [sys.executable, "-m", "parallio", "asgi", *args, "--port", "0"],
        serving=r"serving on https?://[^:]+:(\d+)")
    return process, port
