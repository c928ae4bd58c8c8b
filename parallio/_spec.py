"""What the main thread tells each worker: plain, picklable data."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from ._ref import ObjectRef


@dataclass
class Endpoint:
    """A server address to listen on, or a client address to connect to.

    Made by :func:`parallio.server` / :func:`parallio.client` on the main
    thread; each worker then opens its own listening socket on ``address``
    (SO_REUSEPORT) and the kernel spreads connections across them.
    """

    kind: str  # "server" or "client"
    host: str
    port: int
    family: int
    address: tuple
    backlog: int = 1024
    protocol: ObjectRef | None = None
    # What connections pass through before the protocol (parallio.edge):
    # TLS (a parallio.tls.TlsSource) and the PROXY protocol header, read
    # from the peers in proxy_allowed (a parallio.trust.TrustedAddresses).
    tls: Any = None
    proxy_allowed: Any = None
    # Keeps a server's port reserved (and resolved, for port 0) while workers
    # come and go. Main-thread only: not sent to workers.
    placeholder: socket.socket | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["placeholder"] = None
        return state

    def __repr__(self) -> str:
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"<parallio {self.kind} {host}:{self.port}>"


@dataclass
class MainModule:
    """How a worker loads the user's ``__main__`` module: by module name
    (``python -m pkg.mod``) or by file path (``python script.py``)."""

    name: str | None
    path: str | None


@dataclass
class WorkerSpec:
    seq_id: int
    io: str
    host: str
    endpoints: list[Endpoint]
    sys_path: list[str]
    main_module: MainModule | None
    log_level: int
    extras: dict[str, Any] = field(default_factory=dict)
