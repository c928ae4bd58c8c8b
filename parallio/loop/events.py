"""An asyncio event loop whose I/O goes through one parallio engine.

:class:`EventLoop` keeps asyncio's own scheduling (``BaseEventLoop``: the
ready queue, timers, tasks, the exception handler, debug mode, executors)
and its Unix parts (signals through the self-pipe, subprocesses, Unix
sockets), and gives it an engine instead of a selector:

- **completions** for what carries the traffic: socket transports (reads
  through the engine's continuous receive -- multishot recv into the
  provided-buffer ring on io_uring -- writes through :class:`parallio.stream.
  Stream`'s send queue) and listening sockets (multishot accept). Their
  protocol callbacks run straight from the engine's completions, as uvloop
  runs them from libuv's callbacks: no future, no scheduled callback per
  read.
- **readiness, in the same engine**, for what has no completion of its own
  or is defined by readiness: ``add_reader``/``add_writer`` (psycopg's async
  mode), the self-pipe that wakes the loop (``call_soon_threadsafe``,
  signals), datagram endpoints, subprocess pipes and the ``sock_*`` calls.
  :class:`EngineSelector` is asyncio's selector interface on the engine's
  one-shot ``wait_readable``/``wait_writable``, re-armed while registered,
  which is the level-triggered behaviour asyncio expects of a selector.

The ``sock_*`` calls keep asyncio's readiness path (try the call at once,
wait through the engine only when it would block) on purpose: a cancelled
``sock_recv`` must not have taken data, which a receive already submitted
to the kernel cannot promise.
"""

from __future__ import annotations

import asyncio
import errno
import os
import selectors
import socket
from asyncio import constants, sslproto, trsock
from asyncio.log import logger
from asyncio.unix_events import _UnixSelectorEventLoop
from typing import Any, Callable, Iterator, Mapping

from ..engine import choose_engine, make_engine
from ..engine.base import Engine, Handle
from ..stream import Counters, Stream
from .transports import SocketTransport

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_SelectorKey = selectors.SelectorKey
# Accept errors that mean "out of descriptors or memory for now": asyncio
# pauses accepting for a while on them, and so does this loop.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _Registration:
    """One descriptor watched for readiness: its key, its engine handle,
    and which one-shot waits are in the engine now."""

    __slots__ = ("key", "handle", "reading", "writing", "on_readable", "on_writable")

    def __init__(self, selector: "EngineSelector", key: selectors.SelectorKey,
                 handle: Handle) -> None:
        self.key = key
        self.handle = handle
        self.reading = False
        self.writing = False
        ready = selector._ready

        def on_readable(_mask: int) -> None:
            self.reading = False
            ready.append((self, _READ))

        def on_writable(_mask: int) -> None:
            self.writing = False
            ready.append((self, _WRITE))

        self.on_readable = on_readable
        self.on_writable = on_writable


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    """The registered keys, looked up by descriptor or file object (as
    asyncio looks them up)."""

    def __init__(self, registrations: dict[int, _Registration]) -> None:
        self._registrations = registrations

    def __len__(self) -> int:
        return len(self._registrations)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._registrations[_fileobj_to_fd(fileobj)].key
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._registrations)


class EngineSelector(selectors.BaseSelector):
    """asyncio's selector interface on an engine's readiness waits.

    Each registered descriptor has a one-shot wait in the engine for every
    event it is registered for; one that fired is armed again at the next
    :meth:`select` while the registration still asks for it. A descriptor
    that stays ready is so reported on every turn: level-triggered, as
    asyncio's own selectors are. The poll itself is the engine's, so the
    completions of the loop's transports are delivered in the same call.
    """

    def __init__(self, engine: Engine[Any], before_poll: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._registrations: dict[int, _Registration] = {}
        #: (registration, event) of the waits that fired during a poll.
        self._ready: list[tuple[_Registration, int]] = []
        #: Registrations whose fired wait is to be armed again.
        self._rearm: list[_Registration] = []
        self._before_poll = before_poll

    def _arm(self, registration: _Registration) -> None:
        events = registration.key.events
        if events & _READ and not registration.reading:
            registration.reading = True
            self.engine.wait_readable(registration.handle, registration.on_readable)
        if events & _WRITE and not registration.writing:
            registration.writing = True
            self.engine.wait_writable(registration.handle, registration.on_writable)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._registrations:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = _SelectorKey(fileobj, fd, events, data)
        registration = self._registrations[fd] = _Registration(self, key, self.engine.open(fd))
        self._arm(registration)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        registration = self._registrations.pop(fd)
        self._release(registration)
        return registration.key

    def _release(self, registration: _Registration) -> None:
        try:
            self.engine.release(registration.handle)
        except OSError:
            # The descriptor was closed before it was unregistered (epoll
            # then refuses to forget it); the kernel dropped it already.
            pass

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        try:
            registration = self._registrations[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        dropped = registration.key.events & ~events
        registration.key = _SelectorKey(fileobj, fd, events, data)
        if dropped and (registration.reading or registration.writing):
            # The engine cancels both waits at once; the one still wanted
            # is armed again below.
            self.engine.cancel_waits(registration.handle)
            registration.reading = registration.writing = False
        self._arm(registration)
        return registration.key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._rearm:
            rearm, self._rearm = self._rearm, []
            registrations = self._registrations
            for registration in rearm:
                if registrations.get(registration.key.fd) is registration:
                    self._arm(registration)
        if self._before_poll is not None:
            self._before_poll()
        self.engine.poll(timeout)
        if not self._ready:
            return []
        # The waits' callbacks append to this very list: emptied in place.
        fired = self._ready.copy()
        self._ready.clear()
        registrations = self._registrations
        events: dict[int, list[Any]] = {}
        for registration, event in fired:
            key = registration.key
            if registrations.get(key.fd) is not registration:
                continue   # unregistered by a callback of the same poll
            entry = events.get(key.fd)
            if entry is None:
                events[key.fd] = [registration, event]
                self._rearm.append(registration)
            else:
                entry[1] |= event
        return [(registration.key, mask & registration.key.events)
                for registration, mask in events.values()]

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._registrations[_fileobj_to_fd(fileobj)].key
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _KeyMap(self._registrations)

    def close(self) -> None:
        for registration in self._registrations.values():
            self._release(registration)
        self._registrations.clear()
        self._ready.clear()
        self._rearm.clear()


class EventLoop(_UnixSelectorEventLoop):
    """An asyncio event loop on a parallio engine; see the module docstring.

    ``engine``: drive this engine (a worker's own), which the loop then
    leaves open when it closes; by default the loop makes one of the kind
    ``io`` names (``auto``: io_uring where the kernel allows it, else epoll)
    and shuts it down on :meth:`close`. ``counters`` receive the traffic of
    the loop's transports (a worker's, for its stats).
    """

    # What this class uses of asyncio's selector loop internals (typeshed
    # does not declare them).
    _transports: Any
    _debug: bool
    _ensure_fd_no_transport: Callable[[Any], None]
    _accept_connection2: Callable[..., Any]

    def __init__(self, engine: Engine[Any] | None = None, *, io: str = "auto",
                 counters: Counters | None = None) -> None:
        self._owns_engine = engine is None
        if engine is None:
            engine = make_engine(choose_engine(io)[0])
        #: The engine every descriptor of this loop goes through.
        self.engine = engine
        #: Traffic counters of the loop's transports (the Stream loop interface).
        self.counters = counters if counters is not None else Counters()
        #: Streams with writes held back until the end of this turn.
        self._corked: list[Any] = []
        #: Connections this loop's transports have carried.
        self.connections_total = 0
        #: The listening sockets of this loop's servers, by descriptor.
        self._listeners: dict[int, _Listener] = {}
        try:
            super().__init__(EngineSelector(engine, self._flush_corked))
        except BaseException:
            if self._owns_engine:
                engine.shutdown()
            raise

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} engine={self.engine.name} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        if self._owns_engine:
            self.engine.shutdown()

    def transport_count(self) -> int:
        """The transports open now (sockets, datagram endpoints, pipes)."""
        return len(self._transports)

    # -- the Stream loop interface ---------------------------------------------
    def stream_closed(self, stream: Stream) -> None:
        """A transport's stream closed (the transport tracks itself)."""

    def cork(self, stream: Any) -> None:
        """Hold ``stream``'s writes until this turn's callbacks have run, so
        that what they write goes out as one send."""
        self._corked.append(stream)

    def _flush_corked(self) -> None:
        corked = self._corked
        if corked:
            self._corked = []
            for stream in corked:
                stream.uncork()

    # -- transports ----------------------------------------------------------------
    def _make_socket_transport(self, sock: socket.socket, protocol: asyncio.BaseProtocol,
                               waiter: asyncio.Future[Any] | None = None, *,
                               extra: dict[str, Any] | None = None,
                               server: asyncio.Server | None = None) -> asyncio.Transport:
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: asyncio.BaseProtocol,
                            sslcontext: Any, waiter: asyncio.Future[Any] | None = None, *,
                            server_side: bool = False, server_hostname: str | None = None,
                            extra: dict[str, Any] | None = None,
                            server: asyncio.Server | None = None,
                            ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
                            ) -> asyncio.Transport:
        self._ensure_fd_no_transport(rawsock)
        # asyncio's own loops pass None and floats here too; typeshed is narrower.
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,  # type: ignore[arg-type]
            ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def _sendfile_native(self, transp: asyncio.Transport, file: Any, offset: int,
                               count: int | None) -> int:
        if not isinstance(transp, SocketTransport):
            raise asyncio.SendfileNotAvailableError(f"{transp!r} does not send files natively")
        return await transp.sendfile(file, offset, count)

    # -- listening sockets ------------------------------------------------------------
    def _start_serving(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                       sock: socket.socket, sslcontext: Any = None,
                       server: asyncio.Server | None = None, backlog: int = 100,
                       ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
                       ) -> None:
        fd = sock.fileno()
        if fd in self._listeners:
            return
        listener = _Listener(self, sock, protocol_factory, sslcontext, server,
                             ssl_handshake_timeout, ssl_shutdown_timeout)
        self._listeners[fd] = listener
        listener.start()

    def _stop_serving(self, sock: socket.socket) -> None:
        listener = self._listeners.pop(sock.fileno(), None)
        if listener is not None:
            listener.stop()
        # The Unix loop's part: unlink the socket file of a Unix server.
        super()._stop_serving(sock)  # type: ignore[misc]


class _Listener:
    """A listening socket of a server: the engine accepts (multishot on
    io_uring) and each connection gets its transport straight away."""

    def __init__(self, loop: EventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.BaseProtocol], sslcontext: Any,
                 server: asyncio.Server | None, ssl_handshake_timeout: float | None,
                 ssl_shutdown_timeout: float | None) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.sslcontext = sslcontext
        self.server = server
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.ssl_shutdown_timeout = ssl_shutdown_timeout
        self.handle: Handle | None = None
        self.retry: asyncio.TimerHandle | None = None
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto
        if self.family in (socket.AF_INET, socket.AF_INET6):
            # Accepted sockets inherit it (Linux): no system call per
            # connection for what asyncio sets on each one.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        self.retry = None
        self.handle = self.loop.engine.open(self.sock.fileno())
        self.loop.engine.accept(self.handle, self._accepted)

    def stop(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.handle is not None:
            handle, self.handle = self.handle, None
            self.loop.engine.stop_accepting(handle)
            self.loop.engine.release(handle)

    def _accepted(self, fd: int) -> None:
        loop = self.loop
        if fd < 0:
            self._failed(-fd)
            return
        conn = socket.socket(self.family, self.type, self.proto, fileno=fd)
        if loop._debug:
            logger.debug("%r got a new connection: %r", self.server, conn)
        if self.sslcontext:
            loop.create_task(loop._accept_connection2(
                self.protocol_factory, conn, None, self.sslcontext, self.server,
                self.ssl_handshake_timeout, self.ssl_shutdown_timeout))
            return
        try:
            protocol = self.protocol_factory()
            loop._make_socket_transport(conn, protocol, extra=None, server=self.server)
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            if loop._debug:
                loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                })

    def _failed(self, error: int) -> None:
        exc = OSError(error, f"accept: {os.strerror(error)}")
        if error in _EXHAUSTED and self.handle is not None:
            self.loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": trsock.TransportSocket(self.sock),
            })
            handle, self.handle = self.handle, None
            self.loop.engine.stop_accepting(handle)
            self.loop.engine.release(handle)
            self.retry = self.loop.call_later(constants.ACCEPT_RETRY_DELAY, self.start)
        elif error not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
            self.loop.call_exception_handler({
                "message": "accepting a connection failed",
                "exception": exc,
                "socket": trsock.TransportSocket(self.sock),
            })
