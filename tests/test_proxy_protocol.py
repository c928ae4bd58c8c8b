"""The PROXY protocol: the sans-I/O parser (v1, v2, split at every byte,
malformed headers), trusted addresses, and live servers that read the
header before the protocol starts (alone and in front of TLS)."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from parallio.proxy_protocol import (V2_SIGNATURE, ProxyHeaderParser, ProxyProtocolError,
                                     encode_v1, encode_v2)
from parallio.tls import TlsConfig, ssl_source
from parallio.trust import TrustedAddresses

from .conftest import port_of, recv_until, serving


def parse_split(data: bytes):
    """Feed ``data`` one byte at a time; the header and what followed."""
    parser = ProxyHeaderParser()
    for index in range(len(data)):
        header = parser.feed(data[index:index + 1])
        if header is not None:
            return header, parser.rest + data[index + 1:]
    return None, b""


def test_v1():
    data = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\nGET / HTTP/1.1\r\n"
    for header, rest in (parse_split(data), (ProxyHeaderParser().feed(data), None)):
        assert (header.version, header.command) == (1, "PROXY")
        assert header.source == ("203.0.113.7", 51234)
        assert header.destination == ("192.0.2.1", 443)
        if rest is not None:
            assert rest == b"GET / HTTP/1.1\r\n"
    header, _ = parse_split(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n")
    assert header.source == ("2001:db8::1", 65535) and header.destination == ("::1", 0)
    header, rest = parse_split(b"PROXY UNKNOWN ff:: ::1 1 2\r\nx")
    assert (header.command, header.source, rest) == ("LOCAL", None, b"x")
    assert encode_v1(("10.0.0.1", 1), ("10.0.0.2", 2)) == b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n",       # a field missing
    b"PROXY TCP4 ::1 ::1 1 2\r\n",                        # v6 addresses under TCP4
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n",            # a port past 65535
    b"PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n",               # a leading zero
    b"PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n",
    b"PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n",
    b"PROXY TCP4 999.2.3.4 1.2.3.5 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\xff\r\n",
    b"PROXX TCP4",
    b"GET / HTTP/1.1\r\n",                                # no header at all
    b"\x16\x03\x01",                                      # TLS with no header
    b"PROXY " + b"x" * 120,                               # no CRLF within 107 bytes
])
def test_v1_refusals(line):
    with pytest.raises(ProxyProtocolError):
        parse_split(line)


def test_v2():
    tlvs = {0x04: b"\x00\x01", 0xE0: b"unique-id"}
    data = encode_v2(("198.51.100.9", 40000), ("192.0.2.1", 8443), tlvs) + b"rest"
    header, rest = parse_split(data)
    assert (header.version, header.command) == (2, "PROXY")
    assert header.source == ("198.51.100.9", 40000) and header.destination == ("192.0.2.1", 8443)
    assert header.tlvs == tlvs and rest == b"rest"
    header, _ = parse_split(encode_v2(("2001:db8::9", 1), ("2001:db8::1", 2)))
    assert header.source == ("2001:db8::9", 1) and header.family == socket.AF_INET6
    header, rest = parse_split(encode_v2(None, None) + b"health")
    assert (header.command, header.source, rest) == ("LOCAL", None, b"health")
    # A unix socket's addresses are paths.
    body = struct.pack("!108s108s", b"/run/client.sock", b"/run/server.sock")
    header, _ = parse_split(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, len(body)) + body)
    assert header.source == "/run/client.sock" and header.family == socket.AF_UNIX


@pytest.mark.parametrize("data", [
    V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12) + bytes(12),   # version 1 in a v2 header
    V2_SIGNATURE + struct.pack("!BBH", 0x22, 0x11, 12) + bytes(12),   # command 2
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x41, 12) + bytes(12),   # family 4
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 8) + bytes(8),     # shorter than its addresses
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 14) + bytes(12) + b"\x01\x00",  # a cut TLV
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 16) + bytes(12) + b"\x01\x00\x09x",
    b"\r\n\r\n\x00\r\nQUIX\n",
])
def test_v2_refusals(data):
    with pytest.raises(ProxyProtocolError):
        parse_split(data)


def test_trusted_addresses():
    trusted = TrustedAddresses("127.0.0.1, 10.0.0.0/8,::1,2001:db8::/32")
    assert "127.0.0.1" in trusted and "10.200.3.4" in trusted and "::1" in trusted
    assert "::ffff:10.1.1.1" in trusted            # v4 mapped into v6
    assert "2001:db8:1::5" in trusted and "fe80::1%eth0" not in trusted
    assert "11.0.0.1" not in trusted and "not-an-ip" not in trusted and "unknown" not in trusted
    assert trusted.trusts_peer(("10.0.0.1", 5)) and not trusted.trusts_peer(("8.8.8.8", 5))
    assert trusted.trusts_peer("/run/app.sock")       # a unix socket's peer
    everyone = TrustedAddresses("*")
    assert "8.8.8.8" in everyone and "unknown" in everyone
    assert "127.0.0.1" not in TrustedAddresses("")
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP address"):
        TrustedAddresses("10.0.0.0/33")
    import pickle
    assert pickle.loads(pickle.dumps(trusted)) == trusted


# -- live ----------------------------------------------------------------------------

PEER = "tests._protocols:ProxiedPeer"


def test_the_header_sets_the_peer(combo):
    with serving(PEER, combo, proxy_allowed=TrustedAddresses("127.0.0.1")) as runtime:
        address = ("127.0.0.1", port_of(runtime))
        for header, version in ((encode_v1(("203.0.113.7", 4711), ("192.0.2.1", 80)), 1),
                                (encode_v2(("203.0.113.7", 4711), ("192.0.2.1", 80)), 2)):
            with socket.create_connection(address, timeout=5) as sock:
                # The header and the protocol's first bytes in one segment.
                sock.sendall(header + b"first bytes\n")
                assert recv_until(sock, b"bytes\n") == (
                    f"203.0.113.7 4711 192.0.2.1 {version}\nfirst bytes\n".encode())
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(encode_v2(None, None))       # LOCAL: a health check
            assert recv_until(sock).startswith(b"127.0.0.1 ")
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"no header\r\n")
            assert sock.recv(100) == b""


def test_an_untrusted_peer_is_cut_off():
    with serving(PEER, ("threads", "epoll"), proxy_allowed=TrustedAddresses("10.0.0.0/8")) \
            as runtime:
        with socket.create_connection(("127.0.0.1", port_of(runtime)), timeout=5) as sock:
            sock.sendall(encode_v1(("203.0.113.7", 4711), ("192.0.2.1", 80)))
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass


def test_header_then_tls(certificates):
    tls = ssl_source(TlsConfig(certificates.server_cert, certificates.server_key))
    with serving("tests._protocols:TlsInfo", ("threads", "epoll"), tls=tls,
                 proxy_allowed=TrustedAddresses("127.0.0.1")) as runtime:
        raw = socket.create_connection(("127.0.0.1", port_of(runtime)), timeout=5)
        raw.sendall(encode_v2(("198.51.100.20", 5555), ("192.0.2.1", 443)))
        with certificates.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            info = json.loads(recv_until(sock))
            assert info["peer"] == ["198.51.100.20", 5555] and info["proxied"]
            assert info["sni"] == "localhost"
