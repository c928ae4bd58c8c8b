"""Which peers are trusted proxies: ``--forwarded-allow-ips``.

A :class:`TrustedAddresses` is a set of IP addresses and networks
(``"127.0.0.1,10.0.0.0/8,::1"``, or ``"*"`` for every peer). It decides
whether a peer's PROXY protocol header (:mod:`parallio.proxy_protocol`)
and its ``X-Forwarded-*``/``Forwarded`` fields
(:mod:`parallio.http.forwarded`) are believed. A peer on a unix socket is
always trusted: only a local process the socket's file mode lets in can
connect there.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

__all__ = ["TrustedAddresses", "DEFAULT_TRUSTED"]

#: gunicorn's and uvicorn's default: only a proxy on this machine.
DEFAULT_TRUSTED = "127.0.0.1"

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
# Verdicts on addresses outside the exact set are remembered, up to this many.
_CACHE_SIZE = 4096


class TrustedAddresses:
    """IP addresses and networks to trust; ``address in trusted`` takes an
    address as text (``"10.1.2.3"``, ``"::ffff:10.1.2.3"``)."""

    __slots__ = ("spec", "everyone", "_exact", "_networks", "_verdicts")

    def __init__(self, spec: Union[str, Iterable[str]] = DEFAULT_TRUSTED) -> None:
        items = ([item.strip() for item in spec.split(",")] if isinstance(spec, str)
                 else [str(item).strip() for item in spec])
        items = [item for item in items if item]
        self.spec = ",".join(items)
        self.everyone = "*" in items
        exact: set[str] = set()
        networks: list[_Network] = []
        for item in items:
            if item == "*":
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"forwarded-allow-ips: {item!r} is not an IP address or "
                                 "network (like 10.0.0.0/8), nor '*'") from None
            if network.num_addresses == 1:
                exact.add(str(network.network_address))
            else:
                networks.append(network)
        self._exact = frozenset(exact)
        self._networks = tuple(networks)
        self._verdicts: dict[str, bool] = {}

    @classmethod
    def of(cls, value: Union[str, Iterable[str], "TrustedAddresses"]) -> "TrustedAddresses":
        """``value`` as a TrustedAddresses (itself if it is one)."""
        return value if isinstance(value, TrustedAddresses) else cls(value)

    def __contains__(self, address: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(address, str):
            return False
        if address in self._exact:
            return True
        verdict = self._verdicts.get(address)
        if verdict is None:
            verdict = self._judge(address)
            if len(self._verdicts) >= _CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[address] = verdict
        return verdict

    def _judge(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if str(ip) in self._exact:
            return True
        return any(ip in network for network in self._networks)

    def trusts_peer(self, peer: object) -> bool:
        """Whether the peer of a socket (``getpeername()``: a tuple for
        IP, a path string for a unix socket) is trusted."""
        if isinstance(peer, tuple):
            return peer[0] in self
        return True

    def __repr__(self) -> str:
        return f"TrustedAddresses({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedAddresses) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __reduce__(self) -> tuple:
        return (TrustedAddresses, (self.spec,))
