"""TLS: the sans-I/O session against the stdlib's client side, the settings
and their errors, and live servers in every host and engine with real
clients (Python's ssl, openssl s_client)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from parallio.tls import TlsConfig, TlsSession, TlsSetupError, rfc4514_name, ssl_source

from ._tls import KEY_PASSWORD
from .conftest import port_of, recv_until, serving

TLS_INFO = "tests._protocols:TlsInfo"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(certificates, **options) -> TlsConfig:
    return TlsConfig(certificates.server_cert, certificates.server_key, **options)


# -- the session, sans I/O ------------------------------------------------------------

class _Client:
    """The stdlib's client side on memory BIOs, to face a TlsSession."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None = "localhost") -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.object = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)


def _handshake(client: _Client, server: TlsSession) -> None:
    for _ in range(10):
        try:
            client.object.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        sent = client.outgoing.read()
        if sent:
            server.handshake(sent) if not server.handshake_done else server.feed(sent)
        reply = server.outgoing()
        if reply:
            client.incoming.write(reply)
        if done and server.handshake_done and not reply and not sent:
            return
    raise AssertionError("the handshake did not finish")


def test_session_handshake_data_and_close(certificates):
    server = TlsSession(config(certificates).context())
    client = _Client(certificates.client_context(), server_name="app.test")
    _handshake(client, server)
    assert server.server_name == "app.test" and server.alpn_protocol == "http/1.1"
    assert server.version in ("TLSv1.3", "TLSv1.2") and server.peercert() is None
    # Client to server, split at every byte of its records.
    client.object.write(b"hello " * 1000)
    records = client.outgoing.read()
    plain = b""
    for index in range(len(records)):
        server.feed(records[index:index + 1])
        plain += server.decrypt()
    assert plain == b"hello " * 1000
    # Server to client.
    client.incoming.write(server.encrypt(b"x" * 100_000))
    received = b""
    while len(received) < 100_000:
        received += client.object.read(65536)
    assert received == b"x" * 100_000
    # The client's close_notify is seen; the server's own is a valid alert.
    try:
        client.object.unwrap()
    except ssl.SSLWantReadError:
        pass
    server.feed(client.outgoing.read())
    assert server.decrypt() == b"" and server.peer_closed
    client.incoming.write(server.close_notify())
    client.object.unwrap()


def test_session_client_certificate(certificates):
    tls = config(certificates, ca_certs=certificates.ca, cert_reqs="required")
    server = TlsSession(tls.context())
    client = _Client(certificates.client_context(client_cert=True))
    _handshake(client, server)
    cert = server.peercert()
    assert rfc4514_name(cert["subject"]) == "CN=client one,OU=clients,O=parallio tests,C=SE"
    assert server.peercert(binary_form=True)[:1] == b"\x30"  # DER


def test_session_refuses_an_unverified_client(certificates):
    tls = config(certificates, ca_certs=certificates.other_ca, cert_reqs="required")
    server = TlsSession(tls.context())
    client = _Client(certificates.client_context(client_cert=True))
    with pytest.raises(ssl.SSLError):
        _handshake(client, server)
    assert server.outgoing() or True  # an alert may be pending; sending it is the caller's


def test_rfc4514_escaping():
    name = ((("commonName", "a,b+c"),), (("organizationName", " lead#"),),
            (("organizationalUnitName", "x"), ("userId", "7")))
    assert rfc4514_name(name) == "OU=x+UID=7,O=\\ lead#,CN=a\\,b\\+c"


# -- settings -----------------------------------------------------------------------

def test_settings_errors_name_the_file(certificates, tmp_path):
    with pytest.raises(TlsSetupError, match="no such file '/nope.pem'"):
        TlsConfig("/nope.pem").context()
    with pytest.raises(TlsSetupError, match="wrong key password"):
        TlsConfig(certificates.server_cert, certificates.server_key_encrypted,
                  password="wrong").context()
    with pytest.raises(TlsSetupError, match="is encrypted: give its password"):
        TlsConfig(certificates.server_cert, certificates.server_key_encrypted).context()
    with pytest.raises(TlsSetupError, match="does not match"):
        TlsConfig(certificates.server_cert, certificates.client_key).context()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match=str(garbage)):
        TlsConfig(str(garbage)).context()
    with pytest.raises(TlsSetupError, match="needs ca_certs"):
        TlsConfig(certificates.server_cert, cert_reqs="required")
    with pytest.raises(TlsSetupError, match="use none, optional or required"):
        TlsConfig(certificates.server_cert, cert_reqs="sometimes")
    # The right password works; settings are tried when given to a server.
    TlsConfig(certificates.server_cert, certificates.server_key_encrypted,
              password=KEY_PASSWORD).context()
    with pytest.raises(TlsSetupError):
        ssl_source(TlsConfig("/nope.pem"))


def test_a_context_object_reaches_threads_only(certificates):
    context = config(certificates).context()
    source = ssl_source(context)
    with pytest.raises(TypeError, match="threads host only"):
        import pickle
        pickle.dumps(source)
    with pytest.raises(TypeError, match="ssl= takes"):
        ssl_source(42)


# -- live, every host and engine ------------------------------------------------------

def tls_connect(runtime, certificates, server_name="localhost", client_cert=False,
                context=None) -> ssl.SSLSocket:
    context = context or certificates.client_context(client_cert=client_cert)
    raw = socket.create_connection(("127.0.0.1", port_of(runtime)), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name, suppress_ragged_eofs=False)


def test_echo_over_tls(combo, certificates, tmp_path):
    big = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    with serving(TLS_INFO, combo, tls=ssl_source(config(certificates))) as runtime:
        with tls_connect(runtime, certificates, server_name="app.test") as sock:
            info = json.loads(recv_until(sock))
            assert info["sni"] == "app.test" and info["alpn"] == "http/1.1"
            assert info["client"] is None and info["peer"][0] == "127.0.0.1"
            assert sock.version() == info["version"]
            sock.sendall(b"ping\n")
            assert recv_until(sock) == b"ping\n"
            line = b"y" * 60_000
            sock.sendall((line + b"\n") * 20)   # more than one read, many records
            assert recv_until(sock, b"y\n" * 1, limit=1 << 22).count(b"\n") <= 20
            # A file goes through encryption in slices; lines sent after it
            # come after it.
            sock.sendall(f"file {path}\nafter\n".encode())
            data = b""
            while not data.endswith(b"after\n"):
                chunk = sock.recv(1 << 20)
                assert chunk
                data += chunk
            assert data.endswith(b"<" + big + b">\nafter\n")
            sock.sendall(b"bye\n")
            assert recv_until(sock) .endswith(b"bye\n")
            # close_notify, then the close: suppress_ragged_eofs=False
            # would raise SSLEOFError on a bare TCP close.
            assert sock.recv(100) == b""


def test_client_certificates(certificates):
    tls = ssl_source(config(certificates, ca_certs=certificates.ca, cert_reqs="optional"))
    with serving(TLS_INFO, ("threads", "epoll"), tls=tls) as runtime:
        with tls_connect(runtime, certificates, client_cert=True) as sock:
            info = json.loads(recv_until(sock))
            assert info["client"] == {"countryName": "SE", "organizationName": "parallio tests",
                                      "organizationalUnitName": "clients",
                                      "commonName": "client one"}
        with tls_connect(runtime, certificates) as sock:   # optional: none is fine
            assert json.loads(recv_until(sock))["client"] is None
    tls = ssl_source(config(certificates, ca_certs=certificates.ca, cert_reqs="required"))
    with serving(TLS_INFO, ("threads", "epoll"), tls=tls) as runtime:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with tls_connect(runtime, certificates) as sock:
                recv_until(sock)
        with tls_connect(runtime, certificates, client_cert=True) as sock:
            assert json.loads(recv_until(sock))["client"]["commonName"] == "client one"


def test_what_is_not_tls_is_refused(certificates):
    tls = ssl_source(config(certificates, handshake_timeout=0.5))
    with serving(TLS_INFO, ("threads", "epoll"), tls=tls) as runtime:
        address = ("127.0.0.1", port_of(runtime))
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = recv_all_bytes(sock)
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert reply.endswith(b"use an https:// URL to reach it\n")
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"\x00\x01garbage")
            assert recv_all_bytes(sock) == b""
        # A client that never finishes its handshake is cut off.
        with socket.create_connection(address, timeout=5) as sock:
            started = time.monotonic()
            assert recv_all_bytes(sock) == b""
            assert 0.4 < time.monotonic() - started < 3
        # A client that does not trust the certificate fails; the server carries on.
        context = ssl.create_default_context(cafile=certificates.other_ca)
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(runtime, certificates, context=context)
        with tls_connect(runtime, certificates) as sock:
            assert json.loads(recv_until(sock))["sni"] == "localhost"


def recv_all_bytes(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_password_protected_key_and_factory(certificates):
    tls = ssl_source(TlsConfig(certificates.server_cert, certificates.server_key_encrypted,
                               password=KEY_PASSWORD))
    with serving(TLS_INFO, ("processes", "epoll"), tls=tls) as runtime:
        with tls_connect(runtime, certificates) as sock:
            assert json.loads(recv_until(sock))["alpn"] == "http/1.1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_s_client(certificates):
    with serving(TLS_INFO, ("threads", "epoll"), tls=ssl_source(config(certificates))) as runtime:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port_of(runtime)}",
             "-servername", "app.test", "-alpn", "http/1.1", "-CAfile", certificates.ca,
             "-verify_return_error", "-quiet"],
            input=b"from s_client\nbye\n", capture_output=True, timeout=30)
        lines = result.stdout.splitlines()
        assert json.loads(lines[0])["sni"] == "app.test"
        assert lines[1] == b"from s_client"
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port_of(runtime)}",
             "-alpn", "http/1.1", "-CAfile", certificates.ca],
            input=b"", capture_output=True, timeout=30)
        report = result.stdout.decode()
        assert "Verify return code: 0 (ok)" in report and "ALPN protocol: http/1.1" in report


def test_records_that_do_not_decrypt_close_the_connection(certificates):
    with serving(TLS_INFO, ("threads", "epoll"), tls=ssl_source(config(certificates))) as runtime:
        raw = socket.create_connection(("127.0.0.1", port_of(runtime)), timeout=5)
        client = _Client(certificates.client_context())
        while True:  # the handshake, by hand, so that the next record can be forged
            try:
                client.object.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(client.outgoing.read())
                client.incoming.write(raw.recv(65536))
        raw.sendall(client.outgoing.read())
        # An application-data record whose ciphertext is noise: the server
        # closes (a server that let it pass would leave recv() to time out).
        raw.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
        started = time.monotonic()
        recv_all_bytes(raw)
        assert time.monotonic() - started < 4
        raw.close()
        with tls_connect(runtime, certificates) as sock:   # the worker carries on
            assert json.loads(recv_until(sock))["alpn"] == "http/1.1"


def test_plain_listeners_pay_nothing_for_tls_or_proxies():
    """Without TLS or a PROXY header a listener's connections are plain
    Transports (no edge stage checked per read), and serving HTTP does not
    load the ssl module."""
    from parallio.edge import transport_factory
    from parallio.transport import Transport
    from parallio.trust import TrustedAddresses

    assert transport_factory(None, None) is Transport
    assert transport_factory(None, TrustedAddresses("127.0.0.1")) is not Transport
    code = ("import sys, parallio, parallio.http.server, parallio.http.wsgi, "
            "parallio.http.fastpath, parallio.worker; print('ssl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.stdout.strip() == b"False", result.stderr
