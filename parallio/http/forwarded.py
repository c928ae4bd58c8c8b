"""What proxies say about a request: ``X-Forwarded-For``, ``-Proto``,
``-Host`` and RFC 7239's ``Forwarded``, sans I/O.

A proxy in front of the server connects on the client's behalf, so the
socket's peer is the proxy. :func:`resolve` turns the proxy's fields into
the client address, scheme and host the application should see, as far as
the proxies are trusted (``--forwarded-allow-ips``):

* from a peer that is not trusted, the fields are ignored: anyone could
  have written them;
* the lists are read from the right (the hop nearest to the server): each
  trusted proxy's entry is skipped, and the first untrusted address is the
  client (with ``*``, every hop is trusted and the leftmost is the client);
* a scheme (``http`` or ``https``) or host listed hop by hop is taken from
  the client's hop when the list is as long as the address list, else
  from the nearest hop;
* a request carrying both ``Forwarded`` and any ``X-Forwarded-*`` field is
  taken as it is, believing neither: the trusted proxy writes one kind, so
  the other came from the client (a client can only confuse its own
  requests this way).
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple, Optional

from ..trust import TrustedAddresses

__all__ = ["Forwarded", "resolve", "FORWARDING_FIELDS"]

#: The field names (lowercase) this module reads.
FORWARDING_FIELDS = frozenset(("forwarded", "x-forwarded-for", "x-forwarded-proto",
                               "x-forwarded-host"))
_SCHEMES = frozenset(("http", "https"))
# host [":" port]: a reg-name or IPv4 address, or a bracketed IPv6 literal.
_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# An address in a list: IPv4 or a name, IPv6 bare or bracketed, maybe a port.
_BRACKETED = re.compile(r"\[([^\]]+)\](?::([0-9]{1,5}))?")
# RFC 7239 §4: pairs token=value, value a token or a quoted string.
_PAIR = re.compile(r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z-]+)')
_QUOTED_PAIR = re.compile(r"\\(.)")


class Forwarded(NamedTuple):
    """A request's origin as the application should see it: the client's
    address ``(host, port)`` (port 0 when no proxy said), the scheme the
    client used, and the host it asked for (None: the request's own)."""

    client: object
    scheme: str
    host: Optional[str]


def resolve(fields: Iterable[tuple[str, str]], peer: object, scheme: str,
            trusted: TrustedAddresses) -> Forwarded:
    """The origin of a request with ``fields`` (its forwarding fields, or
    all its fields: others are skipped) that came from ``peer`` (the
    socket's peer, as ``getpeername()`` gives it) over ``scheme``."""
    unchanged = Forwarded(peer, scheme, None)
    if not trusted.trusts_peer(peer):
        return unchanged
    found: dict[str, str] = {}
    for name, value in fields:
        if name in FORWARDING_FIELDS:
            found[name] = f"{found[name]},{value}" if name in found else value
    if not found:
        return unchanged
    standard = found.pop("forwarded", None)
    if standard is not None:
        if found:
            return unchanged  # both kinds: see the module docstring
        hops = _forwarded_elements(standard)
        if hops is None:
            return unchanged
        addresses = [hop.get("for", "unknown") for hop in hops]
        chosen = _client_hop(addresses, trusted)
        if chosen is None:
            return unchanged
        hop = hops[chosen]
        named = _address(addresses[chosen])
        proto = hop.get("proto", "").lower()
        host = hop.get("host")
        return Forwarded(named if named is not None else peer,
                         proto if proto in _SCHEMES else scheme,
                         host if host is not None and _HOST.fullmatch(host) else None)
    client: object = peer
    chosen = None
    addresses = _list(found.get("x-forwarded-for", ""))
    if addresses:
        chosen = _client_hop(addresses, trusted)
        if chosen is not None:
            client = _address(addresses[chosen]) or peer
    proto = _per_hop(found.get("x-forwarded-proto"), chosen, len(addresses)).lower()
    host = _per_hop(found.get("x-forwarded-host"), chosen, len(addresses))
    return Forwarded(client, proto if proto in _SCHEMES else scheme,
                     host if host and _HOST.fullmatch(host) else None)


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _client_hop(addresses: list[str], trusted: TrustedAddresses) -> Optional[int]:
    """The index of the client's entry: the rightmost untrusted one."""
    if not addresses:
        return None
    for index in range(len(addresses) - 1, -1, -1):
        address = _address(addresses[index])
        if address is None or address[0] not in trusted:
            return index
    return 0


def _per_hop(value: Optional[str], chosen: Optional[int], hops: int) -> str:
    if not value:
        return ""
    items = _list(value)
    if not items:
        return ""
    if chosen is not None and len(items) == hops:
        return items[chosen]
    return items[-1]


def _address(text: str) -> Optional[tuple[str, int]]:
    """``(host, port)`` from an address in a forwarding list: ``1.2.3.4``,
    ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80``, or an
    identifier (``unknown``, ``_hidden``) as it is; None if empty."""
    if not text:
        return None
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        return bracketed.group(1), int(bracketed.group(2) or 0)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit() and len(port) <= 5:
            return host, int(port)
    return text, 0


def _forwarded_elements(value: str) -> Optional[list[dict[str, str]]]:
    """RFC 7239's elements (one per hop, left to right) as dicts of their
    pairs (names lowercased, quoted values unquoted); None if malformed."""
    elements: list[list[str]] = []
    pairs: list[str] = []
    piece: list[str] = []
    quoted = escaped = False
    for char in value:
        if quoted:
            piece.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char in ",;":
            pairs.append("".join(piece))
            piece = []
            if char == ",":
                elements.append(pairs)
                pairs = []
        else:
            quoted = char == '"'
            piece.append(char)
    if quoted:
        return None
    pairs.append("".join(piece))
    elements.append(pairs)
    result = []
    for element in elements:
        parsed = {}
        for pair in element:
            pair = pair.strip()
            if not pair:
                continue
            match = _PAIR.fullmatch(pair)
            if match is None:
                return None
            raw = match.group(2)
            if raw.startswith('"'):
                raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1])
            parsed[match.group(1).lower()] = raw
        if parsed:
            result.append(parsed)
    return result or None
