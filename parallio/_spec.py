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
    #: The descriptor of the one listening socket every worker accepts on,
    #: the same number in every worker; None where each binds its own.
    fd: int | None = None
    #: An IPv6 wildcard that takes IPv4 connections too (IPV6_V6ONLY off).
    dualstack: bool = False
    #: Where an inherited socket came from (``fd://3``, ``systemd fd 3``).
    origin: str = ""
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
