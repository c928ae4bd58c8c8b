"""The ASGI server over TLS (scheme https, the "tls" scope extension,
client certificates, wss) and behind proxies (the scope's client and
scheme from trusted X-Forwarded-*/Forwarded fields only)."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest

from parallio.asgi import Config
from parallio.tls import TlsConfig

from _serving import LOOPS, running


async def scope_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        await send({"type": "websocket.close"})
        return
    await receive()
    shown = {"client": scope["client"], "scheme": scope["scheme"],
             "tls": scope["extensions"].get("tls")}
    body = json.dumps(shown).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def get(server, certificates, headers=(), client_cert=False, tls=True) -> dict:
    if tls:
        connection = http.client.HTTPSConnection(
            "localhost", server.port, timeout=10,
            context=certificates.client_context(client_cert=client_cert))
    else:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/", headers=dict(headers))
    reply = json.loads(connection.getresponse().read())
    connection.close()
    return reply


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_scope(loop, certificates):
    tls = TlsConfig(certificates.server_cert, certificates.server_key,
                    ca_certs=certificates.ca, cert_reqs="optional")
    with running(scope_app, Config(tls=tls), loop=loop) as server:
        reply = get(server, certificates, client_cert=True)
        assert reply["scheme"] == "https" and reply["client"][0] == "127.0.0.1"
        extension = reply["tls"]
        assert extension["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
        assert extension["client_cert_name"] == "CN=client one,OU=clients,O=parallio tests,C=SE"
        assert extension["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
        assert extension["tls_version"] in (0x0303, 0x0304)
        assert isinstance(extension["cipher_suite"], int)
        reply = get(server, certificates)
        assert reply["tls"]["client_cert_name"] is None and reply["tls"]["client_cert_chain"] == []


def test_websocket_over_tls_is_wss(certificates):
    websockets = pytest.importorskip("websockets.sync.client")
    tls = TlsConfig(certificates.server_cert, certificates.server_key)
    with running(scope_app, Config(tls=tls)) as server:
        with websockets.connect(f"wss://localhost:{server.port}/",
                                ssl=certificates.client_context(alpn=False)) as socket_:
            assert socket_.recv(timeout=10) == "wss"


def test_forwarded_scope(certificates):
    with running(scope_app, Config()) as server:
        reply = get(server, certificates, tls=False, headers=[
            ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")])
        assert reply["client"] == ["203.0.113.9", 0] and reply["scheme"] == "https"
        reply = get(server, certificates, tls=False, headers=[("Forwarded", "for=192.0.2.1")])
        assert reply["client"] == ["192.0.2.1", 0] and reply["scheme"] == "http"
    with running(scope_app, Config(forwarded_allow_ips="10.0.0.0/8")) as server:
        reply = get(server, certificates, tls=False, headers=[("X-Forwarded-For", "203.0.113.9")])
        assert reply["client"][0] == "127.0.0.1"


def test_plain_http_to_the_tls_port_is_closed(certificates):
    tls = TlsConfig(certificates.server_cert, certificates.server_key)
    with running(scope_app, Config(tls=tls)) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        # A client that does not trust the certificate fails its handshake.
        with pytest.raises(ssl.SSLCertVerificationError):
            with server.connect() as sock:
                ssl.create_default_context(cafile=certificates.other_ca).wrap_socket(
                    sock, server_hostname="localhost")
