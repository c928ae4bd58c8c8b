"""The PROXY protocol (HAProxy's, versions 1 and 2), sans I/O.

A load balancer that relays TCP connections (HAProxy with ``send-proxy``,
AWS NLB, ...) sends a header before the client's first byte that says
whom the connection really came from. :class:`ProxyHeaderParser` reads
that header from the bytes as they arrive; what follows it belongs to the
protocol::

    parser = ProxyHeaderParser()
    header = parser.feed(data)      # None until the header is complete
    if header is not None:
        client = header.source      # ("203.0.113.7", 51234), or None (LOCAL, UNKNOWN)
        rest = parser.rest          # the protocol's first bytes

A header is only to be believed from a trusted peer (the balancer):
:class:`parallio.edge.EdgeTransport` checks the peer before reading one.
The specification is https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = ["ProxyHeader", "ProxyHeaderParser", "ProxyProtocolError", "encode_v1", "encode_v2"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
# A v1 line is at most 107 bytes, its CRLF included (the specification's
# worst case: "PROXY UNKNOWN" with two full IPv6 addresses and ports).
_V1_MAX = 107
_V2_FIXED = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_UNIX = struct.Struct("!108s108s")
# Families (high nibble) and transports (low nibble) of the v2 header.
_FAMILIES = {0x1: socket.AF_INET, 0x2: socket.AF_INET6, 0x3: socket.AF_UNIX}
_ADDRESS_SIZES = {0x1: _V2_INET.size, 0x2: _V2_INET6.size, 0x3: _V2_UNIX.size}

Address = Union[tuple[str, int], str]


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY header said.

    ``command`` is "PROXY" (a relayed connection: ``source`` and
    ``destination`` are the client's and the address it connected to, as
    ``(host, port)``, or paths for unix sockets) or "LOCAL" (the balancer's
    own connection, a health check; v1's ``UNKNOWN`` is taken the same
    way): then both are None and the socket's own addresses stand.
    ``tlvs`` are v2's type-length-value extensions, by type.
    """

    version: int
    command: str
    family: int = socket.AF_UNSPEC
    source: Optional[Address] = None
    destination: Optional[Address] = None
    tlvs: dict[int, bytes] = field(default_factory=dict)


class ProxyHeaderParser:
    """Reads one PROXY header (either version) off the start of a stream."""

    __slots__ = ("_buffer", "rest", "header")

    def __init__(self) -> None:
        self._buffer = b""
        #: What followed the header, once it is complete.
        self.rest = b""
        self.header: Optional[ProxyHeader] = None

    def feed(self, data: bytes) -> Optional[ProxyHeader]:
        """Add received bytes; the header once complete, else None.
        :class:`ProxyProtocolError` as soon as the bytes cannot be one."""
        if self.header is not None:
            raise RuntimeError("the PROXY header is complete: what follows is in .rest")
        buffer = self._buffer = self._buffer + data if self._buffer else data
        if not buffer:
            return None
        if buffer[:1] == b"P":
            if not _V1_PREFIX.startswith(buffer[:6]):
                raise ProxyProtocolError("not a PROXY protocol header")
            end = buffer.find(b"\r\n", 0, _V1_MAX)
            if end < 0:
                if len(buffer) >= _V1_MAX:
                    raise ProxyProtocolError(f"a PROXY v1 line is longer than {_V1_MAX} bytes")
                return None
            header = _parse_v1(buffer[:end])
            rest_at = end + 2
        elif buffer[:1] == b"\r":
            if not V2_SIGNATURE.startswith(buffer[:12]):
                raise ProxyProtocolError("not a PROXY protocol header")
            if len(buffer) < _V2_FIXED.size:
                return None
            _sig, version_command, family, length = _V2_FIXED.unpack_from(buffer)
            rest_at = _V2_FIXED.size + length
            if len(buffer) < rest_at:
                if version_command >> 4 != 2:
                    raise ProxyProtocolError(f"PROXY protocol version {version_command >> 4} "
                                             "is not 2")
                return None
            header = _parse_v2(version_command, family, memoryview(buffer)[_V2_FIXED.size:rest_at])
        else:
            raise ProxyProtocolError("not a PROXY protocol header")
        self.header = header
        self.rest = buffer[rest_at:]
        self._buffer = b""
        return header


def _parse_v1(line: bytes) -> ProxyHeader:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("a PROXY v1 line that is not ASCII") from None
    fields = text.split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(1, "LOCAL")
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {text!r}")
    family = socket.AF_INET if fields[1] == "TCP4" else socket.AF_INET6
    source = (_v1_address(fields[2], family), _v1_port(fields[4]))
    destination = (_v1_address(fields[3], family), _v1_port(fields[5]))
    return ProxyHeader(1, "PROXY", family, source, destination)


def _v1_address(text: str, family: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1: {text!r} is not an IP address") from None
    if (address.version == 4) != (family == socket.AF_INET):
        raise ProxyProtocolError(f"PROXY v1: {text!r} does not match the protocol")
    return str(address)


def _v1_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535 \
            or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"PROXY v1: {text!r} is not a port")
    return int(text)


def _parse_v2(version_command: int, family_transport: int, body: memoryview) -> ProxyHeader:
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY protocol version {version_command >> 4} is not 2")
    command = version_command & 0xF
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2: unknown command {command}")
    family_code = family_transport >> 4
    size = _ADDRESS_SIZES.get(family_code, 0)
    if family_code not in (0, *_FAMILIES) or (family_transport & 0xF) > 2:
        raise ProxyProtocolError(f"PROXY v2: unknown address family 0x{family_transport:02x}")
    if len(body) < size:
        raise ProxyProtocolError("PROXY v2: the header is shorter than its addresses")
    tlvs = _tlvs(body[size:])
    if command == 0 or family_code == 0:
        return ProxyHeader(2, "LOCAL", tlvs=tlvs)
    family = _FAMILIES[family_code]
    if family_code == 0x3:
        source_path, destination_path = _V2_UNIX.unpack_from(body)
        return ProxyHeader(2, "PROXY", family, _path(source_path), _path(destination_path), tlvs)
    layout = _V2_INET if family_code == 0x1 else _V2_INET6
    source, destination, source_port, destination_port = layout.unpack_from(body)
    return ProxyHeader(2, "PROXY", family,
                       (socket.inet_ntop(family, source), source_port),
                       (socket.inet_ntop(family, destination), destination_port), tlvs)


def _path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(data: memoryview) -> dict[int, bytes]:
    tlvs = {}
    position = 0
    while position < len(data):
        if position + 3 > len(data):
            raise ProxyProtocolError("PROXY v2: a truncated TLV")
        kind = data[position]
        length = int.from_bytes(data[position + 1:position + 3], "big")
        end = position + 3 + length
        if end > len(data):
            raise ProxyProtocolError("PROXY v2: a TLV longer than the header")
        tlvs[kind] = bytes(data[position + 3:end])
        position = end
    return tlvs


# -- writing headers (for clients and tests) ------------------------------------

def encode_v1(source: Optional[tuple[str, int]], destination: Optional[tuple[str, int]]) -> bytes:
    """A v1 header for a connection from ``source`` to ``destination``
    (``PROXY UNKNOWN`` when either is None)."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    version = ipaddress.ip_address(source[0]).version
    return (f"PROXY TCP{version} {source[0]} {destination[0]} "
            f"{source[1]} {destination[1]}\r\n").encode("ascii")


def encode_v2(source: Optional[tuple[str, int]], destination: Optional[tuple[str, int]],
              tlvs: Optional[dict[int, bytes]] = None) -> bytes:
    """A v2 header (LOCAL when either address is None)."""
    extensions = b"".join(struct.pack("!BH", kind, len(value)) + value
                          for kind, value in (tlvs or {}).items())
    if source is None or destination is None:
        return _V2_FIXED.pack(V2_SIGNATURE, 0x20, 0x00, len(extensions)) + extensions
    if ipaddress.ip_address(source[0]).version == 4:
        family, code, layout = socket.AF_INET, 0x11, _V2_INET
    else:
        family, code, layout = socket.AF_INET6, 0x21, _V2_INET6
    addresses = layout.pack(socket.inet_pton(family, source[0]),
                            socket.inet_pton(family, destination[0]), source[1], destination[1])
    return (_V2_FIXED.pack(V2_SIGNATURE, 0x21, code, len(addresses) + len(extensions))
            + addresses + extensions)
