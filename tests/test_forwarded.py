"""Proxies' forwarding fields, sans I/O (X-Forwarded-*, RFC 7239's
Forwarded, trust walking from the right, spoofing attempts) and as the
HttpServer and the fast path show them (request.client, .scheme, .host)."""

from __future__ import annotations

import json

import pytest

from parallio.http.forwarded import Forwarded, resolve
from parallio.tls import TlsConfig, ssl_source
from parallio.trust import TrustedAddresses

from ._http_client import Client, address_of
from .conftest import serving

PROXY = ("10.0.0.1", 50000)
TRUSTED = TrustedAddresses("10.0.0.0/8")


def origin(*fields, peer=PROXY, trusted=TRUSTED, scheme="http"):
    return resolve([(name.lower(), value) for name, value in fields], peer, scheme, trusted)


def test_untrusted_peers_are_not_believed():
    fields = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
              ("X-Forwarded-Host", "shop.example")]
    assert origin(*fields, peer=("198.51.100.1", 4000)) == Forwarded(("198.51.100.1", 4000),
                                                                     "http", None)
    assert origin(*fields) == Forwarded(("203.0.113.9", 0), "https", "shop.example")
    assert origin(*fields, peer="/run/app.sock").client == ("203.0.113.9", 0)  # a unix socket
    assert origin(("Accept", "*/*")) == Forwarded(PROXY, "http", None)


def test_x_forwarded_for_is_walked_from_the_right():
    # A client's own (forged) entries are left of the real ones.
    assert origin(("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.0.0.7")).client == \
        ("203.0.113.9", 0)
    # Every hop a trusted proxy: the leftmost is the client.
    assert origin(("X-Forwarded-For", "10.9.9.9, 10.0.0.7")).client == ("10.9.9.9", 0)
    # Repeated fields are one list; ports and IPv6 in either form.
    assert origin(("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.9:4711")
                  ).client == ("203.0.113.9", 4711)
    assert origin(("X-Forwarded-For", "2001:db8::5")).client == ("2001:db8::5", 0)
    assert origin(("X-Forwarded-For", "[2001:db8::5]:80")).client == ("2001:db8::5", 80)
    assert origin(("X-Forwarded-For", "")).client == PROXY
    everyone = TrustedAddresses("*")
    assert origin(("X-Forwarded-For", "1.1.1.1, 203.0.113.9"), trusted=everyone).client == \
        ("1.1.1.1", 0)


def test_scheme_and_host_per_hop():
    # As long as the address list: the client's hop.
    fields = [("X-Forwarded-For", "203.0.113.9, 10.0.0.7"), ("X-Forwarded-Proto", "https, http"),
              ("X-Forwarded-Host", "shop.example, internal:8080")]
    assert origin(*fields) == Forwarded(("203.0.113.9", 0), "https", "shop.example")
    # Otherwise the nearest hop's word.
    assert origin(("X-Forwarded-Proto", "http, HTTPS")).scheme == "https"
    assert origin(("X-Forwarded-Proto", "gopher")).scheme == "http"
    assert origin(("X-Forwarded-Proto", "gopher"), scheme="https").scheme == "https"
    assert origin(("X-Forwarded-Host", "bad host\r\n")).host is None
    assert origin(("X-Forwarded-Host", "[2001:db8::1]:8443")).host == "[2001:db8::1]:8443"


def test_rfc7239_forwarded():
    assert origin(("Forwarded", 'for=192.0.2.60;proto=https;by=203.0.113.43;host=a.example')) \
        == Forwarded(("192.0.2.60", 0), "https", "a.example")
    assert origin(("Forwarded", 'for="[2001:db8:cafe::17]:4711"')).client == \
        ("2001:db8:cafe::17", 4711)
    # Hops: the client's element (the rightmost untrusted) says proto and host.
    value = 'for=1.1.1.1;proto=http, for=203.0.113.9;proto=https;host="x.example", for=10.0.0.7'
    assert origin(("Forwarded", value)) == Forwarded(("203.0.113.9", 0), "https", "x.example")
    assert origin(("Forwarded", "For=unknown;Proto=HTTPS")) == Forwarded(("unknown", 0),
                                                                         "https", None)
    assert origin(("Forwarded", 'for=_hidden, for="10.0.0.9"')).client == ("_hidden", 0)
    assert origin(("Forwarded", 'for="\\"quoted\\",x"')).client == ('"quoted",x', 0)
    for malformed in ('for=1.2.3.4;proto', 'for="unterminated', 'for=a b', '=x', 'for=[::1]'):
        assert origin(("Forwarded", malformed)) == Forwarded(PROXY, "http", None), malformed


def test_both_kinds_believe_neither():
    assert origin(("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")) == \
        Forwarded(PROXY, "http", None)


# -- live: HttpServer and the fast path ----------------------------------------------

@pytest.mark.parametrize("app", ["tests._http_apps:origin_app", "tests._http_apps:OriginFastPath"])
def test_request_origin(app):
    with serving(app, ("threads", "epoll")) as runtime, Client(address_of(runtime)) as client:
        reply = json.loads(client.get("/origin").body)
        assert reply["client"] == reply["peer"] and reply["scheme"] == "http"
        assert reply["host"] == "test"
        reply = json.loads(client.get("/origin", [
            ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "shop.example")]).body)
        assert reply["client"] == ["203.0.113.9", 0] and reply["scheme"] == "https"
        assert reply["host"] == "shop.example"
        # Per request, on one connection: the next one's fields are its own.
        reply = json.loads(client.get("/origin", [("Forwarded", "for=198.51.100.3")]).body)
        assert reply["client"] == ["198.51.100.3", 0] and reply["scheme"] == "http"


def test_untrusting_server_and_tls_scheme(certificates):
    with serving("tests._http_apps:untrusting_app", ("threads", "epoll")) as runtime, \
            Client(address_of(runtime)) as client:
        reply = json.loads(client.get("/origin", [("X-Forwarded-For", "203.0.113.9")]).body)
        assert reply["client"] == reply["peer"]
    tls = ssl_source(TlsConfig(certificates.server_cert, certificates.server_key))
    with serving("tests._http_apps:origin_app", ("threads", "epoll"), tls=tls) as runtime:
        import http.client
        connection = http.client.HTTPSConnection("localhost", address_of(runtime)[1],
                                                 context=certificates.client_context(), timeout=10)
        connection.request("GET", "/origin")
        reply = json.loads(connection.getresponse().read())
        connection.close()
        assert reply["scheme"] == "https" and reply["host"] == f"localhost:{address_of(runtime)[1]}"
