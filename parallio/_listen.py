"""Listening sockets: how a server address becomes what its workers accept on.

A TCP address the server binds itself is served the SO_REUSEPORT way: every
worker opens its own listener on it and the kernel spreads connections over
them. SO_REUSEPORT lets any socket of the same user join such a group, so
the main thread first holds the port with a placeholder bound *without*
SO_REUSEPORT: that bind fails while anything else listens on the address (a
program of any kind, or another parallio), and only once it holds the port
does the placeholder allow SO_REUSEPORT, for this server's workers. The
placeholder's SO_REUSEADDR, which lets it bind past the TIME_WAIT
connections of an earlier run, is switched off after the bind: another
server's probe then fails against the placeholder too, while no worker
listens yet (during a start or a restart).

Unix sockets and inherited descriptors (``fd://N``, systemd socket
activation) have no SO_REUSEPORT: the main thread makes or adopts one
listening socket, and every worker position accepts on its own duplicate
of that descriptor; the kernel hands each connection to one accepter.

Either way the main thread makes each worker position's listening socket
(:func:`open_listener`) and keeps it while workers come and go.

Errors are :class:`ListenError` with a message naming the address.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from typing import Callable, MutableMapping

from ._spec import Endpoint

__all__ = ["ListenError", "Bind", "parse_bind", "resolve", "tcp_server", "unix_server",
           "fd_server", "systemd_servers", "open_listener", "release", "interfaces"]

#: The first descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
_UNIX_PATH_MAX = 107


class ListenError(OSError):
    """A server address cannot be listened on; the message names it."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


# -- what --bind says ----------------------------------------------------------

@dataclass(frozen=True)
class Bind:
    """One parsed ``--bind`` value: ``kind`` is ``tcp`` (``host``,
    ``port``), ``unix`` (``path``) or ``fd`` (``fd``)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


def parse_bind(text: str, default_port: int) -> Bind:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (the default port),
    ``unix:PATH`` or ``fd://N``; ValueError saying what is wrong."""
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError(f"{text!r}: give the socket's path, as unix:/run/app.sock")
        return Bind("unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f"{text!r}: give a descriptor number, as fd://3")
        return Bind("fd", fd=int(number))
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 address as [::1]:8080")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:8080")
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    if not host:
        raise ValueError(f"{text!r}: give a host, as 127.0.0.1:8080 or 0.0.0.0:8080")
    if port_text is None:
        port = default_port
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
    else:
        raise ValueError(f"{text!r}: the port must be a number")
    try:
        check_port(port)
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    return Bind("tcp", host=host, port=port)


# -- TCP ----------------------------------------------------------------------

def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int, passive: bool) -> tuple[int, tuple]:
    """The first address ``host``:``port`` resolves to, as (family,
    sockaddr); ListenError naming the host when it does not resolve."""
    check_port(port)
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    except socket.gaierror as error:
        raise ListenError(f"{host}: cannot resolve the host name ({error.strerror})") from None
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise ListenError(f"{host}: cannot resolve the host name")
    family, _type, _proto, _name, address = infos[0]
    return family, address


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024


def _bind_failed(where: str, port: int | None, error: OSError) -> ListenError:
    code = error.errno
    if code == errno.EADDRINUSE:
        text = "address already in use"
    elif code == errno.EACCES and port is not None and 0 < port < _unprivileged_port_start():
        text = (f"permission denied (ports below {_unprivileged_port_start()} need root "
                "or CAP_NET_BIND_SERVICE)")
    elif code == errno.EADDRNOTAVAIL:
        text = "address not available (it is not an address of this machine)"
    else:
        text = (error.strerror or str(error)).lower()
    return ListenError(f"{where}: {text}", code)


def _is_ipv6_wildcard(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.version == 6 and address.is_unspecified


def tcp_server(host: str, port: int, backlog: int = 1024) -> Endpoint:
    """A TCP server on ``host``:``port`` whose workers each listen with
    SO_REUSEPORT, the port held meanwhile by a placeholder (see the module
    docstring). ``::`` listens on IPv6 and IPv4 alike; other IPv6 addresses
    on IPv6 only."""
    family, address = resolve(host, port, passive=True)
    dualstack = family == socket.AF_INET6 and _is_ipv6_wildcard(host)
    placeholder = socket.socket(family, socket.SOCK_STREAM)
    try:
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            placeholder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not dualstack))
        try:
            placeholder.bind(address)
        except OSError as error:
            raise _bind_failed(_where(address[0], port), port, error) from None
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        placeholder.close()
        raise
    address = placeholder.getsockname()
    return Endpoint("server", host, address[1], family, address, backlog, dualstack=dualstack,
                    placeholder=placeholder)


# -- unix sockets and inherited descriptors -------------------------------------

def _remove_stale_socket(path: str, where: str) -> None:
    """Make room for a new socket at ``path``: a socket file nobody accepts
    on (left by a server that died) is removed; anything else is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"{where}: the path exists and is not a socket", errno.EEXIST)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError as error:
        raise _bind_failed(where, None, error) from None
    finally:
        probe.close()
    raise ListenError(f"{where}: address already in use (a server accepts connections there)",
                      errno.EADDRINUSE)


def unix_server(path: str | os.PathLike, mode: int | None = None,
                backlog: int = 1024) -> Endpoint:
    """A server on the unix socket at ``path`` (made now; a stale socket
    file is replaced, and the file is removed when the server closes), its
    permissions ``mode`` (an int such as ``0o660``) if given."""
    path = os.path.abspath(os.fsdecode(path))
    where = f"unix:{path}"
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ListenError(f"{where}: the path is too long for a unix socket "
                          f"(at most {_UNIX_PATH_MAX} bytes)", errno.ENAMETOOLONG)
    _remove_stale_socket(path, where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as error:
            raise _bind_failed(where, None, error) from None
        try:
            # Before listen(): nobody can connect with the wrong permissions.
            if mode is not None:
                os.chmod(path, mode)
            sock.listen(backlog)
        except BaseException:
            os.unlink(path)
            raise
        sock.setblocking(False)
        made = os.stat(path)
    except BaseException:
        sock.close()
        raise

    def remove_file() -> None:
        try:
            now = os.stat(path)
        except OSError:
            return
        # Only our own socket: another server may have taken the path since.
        if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
            os.unlink(path)

    return Endpoint("server", path, 0, socket.AF_UNIX, path, backlog, fd=sock.fileno(),
                    placeholder=sock, cleanup=remove_file)


def fd_server(fd: int, backlog: int = 1024, origin: str | None = None) -> Endpoint:
    """A server on the inherited socket ``fd``: listening already (systemd
    socket activation) or bound (then it listens now). The endpoint owns the
    descriptor from now on."""
    origin = origin or f"fd://{fd}"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        reason = {errno.EBADF: "not an open descriptor",
                  errno.ENOTSOCK: "not a socket"}.get(error.errno or 0, error.strerror)
        raise ListenError(f"{origin}: {reason}", error.errno) from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ListenError(f"{origin}: not a stream (TCP or unix) socket", errno.EPROTOTYPE)
        family = sock.family
        address = sock.getsockname()
        if family in (socket.AF_INET, socket.AF_INET6) and address[1] == 0:
            raise ListenError(f"{origin}: the socket is not bound to an address", errno.EINVAL)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
        sock.setblocking(False)
        # The workers get it explicitly (a duplicate, or pass_fds); any other
        # program this process starts must not inherit it.
        os.set_inheritable(fd, False)
    except BaseException:
        sock.detach()
        raise
    if family == socket.AF_UNIX:
        path = address if isinstance(address, str) else os.fsdecode(address)
        return Endpoint("server", path, 0, family, path, backlog, fd=fd, origin=origin,
                        placeholder=sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    dualstack = (family == socket.AF_INET6
                 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    return Endpoint("server", address[0], address[1], family, address, backlog, fd=fd,
                    dualstack=dualstack, origin=origin, placeholder=sock)


def systemd_servers(backlog: int = 1024,
                    environ: MutableMapping[str, str] = os.environ) -> list[Endpoint]:
    """The listening sockets systemd passed this process (socket
    activation: ``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``), as
    servers; empty when there are none. The variables are removed, as
    sd_listen_fds(3) does, so that programs this process starts do not take
    the sockets for theirs."""
    count = environ.pop("LISTEN_FDS", None)
    pid = environ.pop("LISTEN_PID", None)
    names = environ.pop("LISTEN_FDNAMES", "")
    if count is None or pid is None or not pid.isdigit() or int(pid) != os.getpid():
        return []
    if not count.isdigit():
        raise ListenError(f"LISTEN_FDS={count!r}: not a number of descriptors")
    labels = names.split(":") if names else []
    servers = []
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        label = labels[index] if index < len(labels) else ""
        origin = f"systemd fd {fd}" + (f" {label!r}" if label and label != "unknown" else "")
        servers.append(fd_server(fd, backlog, origin))
    return servers


# -- the two sides ----------------------------------------------------------------

def open_listener(endpoint: Endpoint) -> socket.socket:
    """One worker position's listening socket for ``endpoint``, made on the
    main thread and non-blocking: a duplicate of a shared socket, or a
    listener of its own in the port's SO_REUSEPORT group."""
    if endpoint.fd is not None:
        return socket.socket(fileno=os.dup(endpoint.fd))
    sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not endpoint.dualstack))
        # Accepted sockets inherit it (Linux): no call per connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind(endpoint.address)
        except OSError as error:
            raise _bind_failed(endpoint.where, endpoint.port, error) from None
        sock.listen(endpoint.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def release(endpoint: Endpoint) -> None:
    """Main side: close what holds the endpoint's address (the placeholder
    or the shared socket) and remove a unix socket's file."""
    if endpoint.placeholder is not None:
        endpoint.placeholder.close()
        endpoint.placeholder = None
    cleanup: Callable[[], None] | None = endpoint.cleanup
    endpoint.cleanup = None
    if cleanup is not None:
        cleanup()


def interfaces(endpoint: Endpoint) -> str:
    """Who can connect, in words: for the log line that says where a
    server listens."""
    if endpoint.family == socket.AF_UNIX:
        return "unix socket"
    host = endpoint.address[0]
    address = ipaddress.ip_address(host)  # getsockname's hosts are numeric
    if address.is_unspecified:
        if endpoint.dualstack:
            return "every interface, IPv4 and IPv6"
        return f"every IPv{address.version} interface"
    if address.is_loopback:
        return "loopback only: this machine"
    return f"IPv{address.version} address {host} only"
