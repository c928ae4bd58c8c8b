"""What the main thread tells each worker: plain, picklable data."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from ._ref import ObjectRef


@dataclass
class Endpoint:
    """A server address to listen on, or a client address to connect to.

    Made by :func:`parallio.server` / :func:`parallio.client` on the main
    thread (see :mod:`parallio._listen`). A TCP server's workers each open
    their own listening socket on ``address`` (SO_REUSEPORT) and the kernel
    spreads connections across them; a server with a ``fd`` (a unix socket,
    an inherited descriptor) has one listening socket that every worker
    accepts on.
    """

    kind: str  # "server" or "client"
    host: str
    port: int
    family: int
    address: Any  # (host, port, ...) for TCP, the path for a unix socket
    backlog: int = 1024
    protocol: ObjectRef | None = None
    #: The main thread's descriptor of the one listening socket every worker
    #: accepts on (each on its own duplicate); None where each has its own
    #: SO_REUSEPORT listener.
    fd: int | None = None
    #: An IPv6 wildcard that takes IPv4 connections too (IPV6_V6ONLY off).
    dualstack: bool = False
    #: Where an inherited socket came from (``fd://3``, ``systemd fd 3``).
    origin: str = ""
    # What connections pass through before the protocol (parallio.edge):
    # TLS (a parallio.tls.TlsSource) and the PROXY protocol header, read
    # from the peers in proxy_allowed (a parallio.trust.TrustedAddresses).
    tls: Any = None
    proxy_allowed: Any = None
    # Main-thread only, not sent to workers: the socket holding a TCP
    # server's port (reserved, and resolved for port 0, while workers come
    # and go) or the shared listening socket, and what to clean up after.
    placeholder: socket.socket | None = field(default=None, repr=False, compare=False)
    cleanup: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["placeholder"] = state["cleanup"] = None
        return state

    @property
    def where(self) -> str:
        """The address as people write it: ``127.0.0.1:8080``,
        ``[::1]:8080``, ``unix:/run/app.sock``, ``fd://3``."""
        if self.family == socket.AF_UNIX:
            where = f"unix:{self.address}"
        else:
            host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
            where = f"{host}:{self.port}"
        return f"{where} ({self.origin})" if self.origin else where

    def __repr__(self) -> str:
        return f"<parallio {self.kind} {self.where}>"


@dataclass
class MainModule:
    """How a worker loads the user's ``__main__`` module: by module name
    (``python -m pkg.mod``) or by file path (``python script.py``)."""

    name: str | None
    path: str | None


@dataclass
class Supervision:
    """How the main thread watches and recycles workers (all off by default).

    ``worker_timeout``: seconds a worker may go without a heartbeat before
    it counts as hung (it is then replaced where the host can kill it).
    ``max_requests`` (+ up to ``max_requests_jitter`` more, drawn per
    worker) and ``max_rss`` (bytes): a worker past either is replaced
    gracefully. ``limit_concurrency``: connections a worker serves at once;
    HTTP answers those beyond with 503.
    """

    worker_timeout: float | None = None
    max_requests: int | None = None
    max_requests_jitter: int = 0
    max_rss: int | None = None
    limit_concurrency: int | None = None

    def heartbeat_interval(self) -> float | None:
        """How often a worker reports it is alive: often enough that a few
        lost turns of its loop never look like a hang."""
        if self.worker_timeout is None:
            return None
        return min(1.0, max(0.05, self.worker_timeout / 4))


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
    #: The logging.config.dictConfig the main process applied, if any.
    log_config: dict[str, Any] | None = None
    #: Per endpoint, the listening socket this worker accepts on (the main
    #: thread made it; -1 for a client). The worker owns these descriptors
    #: and closes them when it stops listening.
    listen_fds: list[int] = field(default_factory=list)
    #: The pipe a worker's blocking waits for the main thread read their
    #: replies from; the host owns it, as it owns the control socket.
    reply_fd: int | None = None
    supervision: Supervision = field(default_factory=Supervision)
