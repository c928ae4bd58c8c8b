"""What a connection passes through before its protocol sees a byte: the
PROXY protocol header, then TLS.

:class:`EdgeTransport` is a :class:`~parallio.transport.Transport` whose
listener asked for either or both. It reads a PROXY header first (from a
trusted peer only: another is cut off), and makes the header's client the
transport's :attr:`~parallio.transport.Transport.peer`; then it runs the
TLS handshake on the worker's engine (:class:`parallio.tls.TlsSession`:
memory BIOs, no blocking, no thread); only then is the protocol made, so
``connection_made`` already sees the client's address, the server name it
asked for and its certificate. Afterwards what arrives is decrypted before
``data_received`` and what is sent is encrypted on the way out, files
included (read in slices and encrypted: the kernel's sendfile cannot
encrypt), and a close sends TLS's close_notify first. Protocols, the HTTP
servers among them, need not know.

A client that speaks plain HTTP to a TLS port gets a plain-text 400 saying
so, then a close; any other bytes that cannot start a TLS handshake, a
failed handshake or one not finished within the handshake timeout close
the connection.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _sockets
from .engine.base import Handle
from .protocol import ProtocolSpec
from .proxy_protocol import ProxyHeader, ProxyHeaderParser, ProxyProtocolError
from .stream import _FILE_SEND_WEIGHT, Stream, _Piece, _size
from .transport import ProtocolLoop, Transport
from .trust import TrustedAddresses

if TYPE_CHECKING:
    import ssl

    from .tls import TlsSession, TlsSource

__all__ = ["EdgeTransport", "transport_factory", "PROXY_HEADER_TIMEOUT"]

log = logging.getLogger("parallio")

#: Seconds a peer gets to send its whole PROXY header.
PROXY_HEADER_TIMEOUT = 10.0
# Files are encrypted this many bytes at a time, with at most this many
# slices waiting to be sent: the rest of the file stays on disk.
_FILE_SLICE = 64 * 1024
_FILE_SLICES_AHEAD = 2
# The send id of a file slice's records: its completion asks for the next slice.
_SLICE_SENT = -1
# An HTTP request line's start: what a plain HTTP client sends a TLS port.
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,12} [^ ]")
_REFUSAL_BODY = b"This port speaks HTTPS (TLS): use an https:// URL to reach it\n"
_PLAIN_HTTP_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))

# The stages of a connection, in order: TLS's first bytes are checked for
# being TLS at all.
_PROXY_HEADER, _HANDSHAKE_START, _HANDSHAKE, _OPEN, _CLOSE_NOTIFIED = range(5)


class EdgeTransport(Transport):
    """A transport behind a PROXY header and/or TLS; see the module docstring.

    TLS connections add :attr:`server_hostname`, :attr:`peercert`,
    :attr:`alpn_protocol`, :attr:`cipher`, :attr:`tls_version` and
    :attr:`ssl_object`; PROXY ones keep what the header said in
    :attr:`proxy_header` and the balancer's address in :attr:`socket_peer`.
    """

    __slots__ = ("_stage", "_tls", "_new_session", "_proxy", "_allowed", "_timer", "_timeout",
                 "_backlog", "_slices_out", "proxy_header")

    def __init__(self, loop: ProtocolLoop, handle: Handle, spec: ProtocolSpec, *,
                 new_session: Optional[Callable[[], "TlsSession"]] = None,
                 handshake_timeout: float = 10.0,
                 proxy_allowed: Optional[TrustedAddresses] = None) -> None:
        super().__init__(loop, handle, spec)
        self._new_session = new_session
        self._tls: Optional[TlsSession] = None
        self._timeout = handshake_timeout
        self._allowed = proxy_allowed
        self._proxy: Optional[ProxyHeaderParser] = None
        self._timer: Any = None
        #: Plaintext and files waiting behind a file being encrypted.
        self._backlog: Optional[deque[_Piece]] = None
        self._slices_out = 0
        #: What the PROXY header said (None without one).
        self.proxy_header: Optional[ProxyHeader] = None
        self._stage = _OPEN

    @property
    def is_tls(self) -> bool:
        return self._new_session is not None

    # -- opening: the PROXY header, the handshake, then the protocol ----------
    def start(self) -> None:
        if self._allowed is not None:
            peer = self.socket_peer
            if peer is None:
                self.abort()  # gone already (a balancer's health check, say)
                return
            if not self._allowed.trusts_peer(peer):
                log.warning("closing a connection from %s: it may not send a PROXY header "
                            "(--forwarded-allow-ips)", _describe(peer))
                self.abort()
                return
            self._stage = _PROXY_HEADER
            self._proxy = ProxyHeaderParser()
            self._timer = self.loop.call_later(PROXY_HEADER_TIMEOUT, self._timed_out,
                                               "its PROXY header")
            self._start_reading()
        else:
            self._begin_tls()

    def _begin_tls(self) -> None:
        if self._new_session is None:
            self._stage = _OPEN
            Transport.start(self)
            return
        self._stage = _HANDSHAKE_START
        self._tls = self._new_session()
        self._timer = self.loop.call_later(self._timeout, self._timed_out, "its TLS handshake")
        self._start_reading()

    def _timed_out(self, what: str) -> None:
        self._timer = None
        log.debug("closing a connection from %s that did not finish %s in time",
                  self._who(), what)
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_data(self, data: bytes | int) -> None:
        stage = self._stage
        if stage == _OPEN:
            tls = self._tls
            if tls is None or data.__class__ is not bytes or not data:
                # Plain after a PROXY header, or EOF or an error: the protocol hears of it.
                Transport._on_data(self, data)
            else:
                tls.feed(data)
                self._deliver(tls, len(data))
        elif data.__class__ is not bytes or not data:
            self._reading = False
            self.abort()  # gone before the protocol began: nothing to tell it
        elif stage == _CLOSE_NOTIFIED:
            return  # closing after a failed start: what comes is not read
        else:
            self._counters.bytes_in += len(data)
            if stage == _PROXY_HEADER:
                self._read_proxy_header(data)
            else:
                self._handshake(data)

    def _read_proxy_header(self, data: bytes) -> None:
        parser = self._proxy
        assert parser is not None
        try:
            header = parser.feed(data)
        except ProxyProtocolError as error:
            log.warning("closing a connection from %s: %s", _describe(self.socket_peer), error)
            self.abort()
            return
        if header is None:
            return
        self._proxy = None
        self._cancel_timer()
        self.proxy_header = header
        if header.source is not None:
            # The client's and the address it reached, not the balancer's.
            self._peer = header.source
            self._local = header.destination
        rest = parser.rest
        self._begin_tls()
        if rest and not self.closing:
            self._counters.bytes_in -= len(rest)  # counted again where it goes next
            self._on_data(rest)

    def _handshake(self, data: bytes) -> None:
        tls = self._tls
        assert tls is not None
        if self._stage == _HANDSHAKE_START:
            if not tls.looks_like_tls(data):
                self._not_tls(data)
                return
            self._stage = _HANDSHAKE
        try:
            done = tls.handshake(data)
        except tls.Error as error:
            log.debug("TLS handshake with %s failed: %s", self._who(), error)
            self._send_records(tls.outgoing())  # the alert that says why
            self._cancel_timer()
            self._stage = _CLOSE_NOTIFIED
            self.close()
            return
        self._send_records(tls.outgoing())
        if not done:
            return
        self._cancel_timer()
        self._stage = _OPEN
        Transport.start(self)
        if tls.buffered and not self.closing:
            # Application data that came with the client's last handshake flight.
            self._deliver(tls, 0)

    def _not_tls(self, data: bytes) -> None:
        self._cancel_timer()
        self._stage = _CLOSE_NOTIFIED  # nothing of TLS is sent from now on
        if _HTTP_REQUEST.match(data):
            log.debug("%s sent plain HTTP to a TLS port: refused with 400", self._who())
            Stream._write(self, _PLAIN_HTTP_REFUSAL)
            self.close()
        else:
            log.debug("%s sent bytes that begin no TLS handshake: closed", self._who())
            self.abort()

    # -- receiving --------------------------------------------------------------
    def _deliver(self, tls: TlsSession, received: int) -> None:
        """Hand the protocol what the records received so far decrypt to."""
        try:
            plain = tls.decrypt()
        except tls.Error as error:
            # Records that do not decrypt: the alert says so, then the close.
            log.debug("TLS error on the connection from %s: %s", self._who(), error)
            self._send_records(tls.outgoing())
            self._stage = _CLOSE_NOTIFIED
            self.close()
            return
        records = tls.outgoing()  # a key update's answer, say
        if records:
            self._send_records(records)
        # The counters count bytes on the wire, as they do for sends.
        self._counters.bytes_in += received - len(plain)
        if plain and self._stage == _OPEN:
            Transport._on_data(self, plain)
        if tls.peer_closed and not self.closed:
            Transport._on_data(self, b"")

    # -- sending ----------------------------------------------------------------
    def _send_records(self, records: bytes) -> None:
        if records and not self.closed:
            Stream._write(self, records)

    def _write(self, data: Any, send_id: int = 0) -> None:
        tls = self._tls
        if tls is None or self.closed:
            if not self.closed:
                Stream._write(self, data, send_id)
            return
        if self._backlog:
            self._hold(_Piece(data, send_id), _size(data))
            return
        Stream._write(self, tls.encrypt(data), send_id)

    def _write_file(self, file: Any, offset: int, count: int, send_id: int = 0) -> None:
        if self._tls is None:
            Stream._write_file(self, file, offset, count, send_id)
            return
        self._hold(_Piece(None, send_id, file, offset, count), _FILE_SEND_WEIGHT)
        self._send_backlog()

    def _hold(self, piece: _Piece, weight: int) -> None:
        """Queue ``piece`` behind a file: it counts as unsent output."""
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(piece)
        self._queued_bytes += weight
        if self._queued_bytes > self._high_water and not self._over_water:
            self._over_water = True
            self._over_high_water()

    def _send_backlog(self) -> None:
        """Encrypt what waits, a file a few slices ahead of the socket."""
        backlog = self._backlog
        tls = self._tls
        assert backlog is not None and tls is not None
        while backlog and not self.closed:
            piece = backlog[0]
            if piece.file is None:
                backlog.popleft()
                self._queued_bytes -= _size(piece.data)
                Stream._write(self, tls.encrypt(piece.data), piece.send_id)
                continue
            if self._slices_out >= _FILE_SLICES_AHEAD:
                return  # the next slice when one of these is sent
            try:
                chunk = os.pread(piece.file.fileno(), min(piece.remaining, _FILE_SLICE),
                                 piece.offset)
            except OSError as error:
                self._abort(error)
                return
            if not chunk:
                self._abort(OSError(errno.EIO, "file ended before its range was sent"))
                return
            piece.offset += len(chunk)
            piece.remaining -= len(chunk)
            records = tls.encrypt(chunk)
            if piece.remaining:
                self._slices_out += 1
                Stream._write(self, records, _SLICE_SENT)
                continue
            backlog.popleft()
            piece.file.close()
            self._queued_bytes -= _FILE_SEND_WEIGHT
            if piece.send_id:
                Stream._write(self, records, piece.send_id)
            else:
                self._slices_out += 1
                Stream._write(self, records, _SLICE_SENT)

    def _piece_sent(self, send_id: int) -> None:
        if send_id != _SLICE_SENT:
            Transport._piece_sent(self, send_id)
            return
        self._slices_out -= 1
        if self._backlog:
            self._send_backlog()

    # -- closing ----------------------------------------------------------------
    def _close_gracefully(self) -> None:
        if self._backlog:
            return  # the backlog's last send completes, and closing resumes
        if self._stage == _OPEN and self._tls is not None:
            self._stage = _CLOSE_NOTIFIED
            notify = self._tls.close_notify()
            if notify:
                Stream._write(self, notify)
                return  # its completion closes
        Stream._close_gracefully(self)

    def _lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        backlog, self._backlog = self._backlog, None
        for piece in backlog or ():
            if piece.file is not None:
                piece.file.close()
        Transport._lost(self, exc)
        self._tls = None

    # -- what TLS and the PROXY header settled ----------------------------------
    @property
    def socket_peer(self) -> Any:
        """The address of the socket's peer (the balancer, with a PROXY
        header); None once the peer is gone."""
        try:
            with _sockets.borrowed(self.handle.fd) as sock:
                return sock.getpeername()
        except OSError:
            return None

    def _who(self) -> str:
        """The peer, for a log line (the connection may be gone)."""
        try:
            return _describe(self.peer)
        except OSError:
            return "a client that left"

    @property
    def server_hostname(self) -> Optional[str]:
        """The host name the client asked for (TLS SNI), or None."""
        return self._tls.server_name if self._tls is not None else None

    @property
    def peercert(self) -> Optional[dict[str, Any]]:
        """The client's verified certificate, as :meth:`ssl.SSLSocket.getpeercert`
        gives it; None without one."""
        return self._tls.peercert() if self._tls is not None else None

    @property
    def peercert_der(self) -> Optional[bytes]:
        return self._tls.peercert(binary_form=True) if self._tls is not None else None

    @property
    def alpn_protocol(self) -> Optional[str]:
        return self._tls.alpn_protocol if self._tls is not None else None

    @property
    def cipher(self) -> Optional[tuple[str, str, int]]:
        return self._tls.cipher if self._tls is not None else None

    @property
    def tls_version(self) -> Optional[str]:
        return self._tls.version if self._tls is not None else None

    @property
    def ssl_object(self) -> Optional[ssl.SSLObject]:
        return self._tls.ssl_object if self._tls is not None else None


def _describe(peer: Any) -> str:
    if isinstance(peer, tuple):
        return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
    if peer is None:
        return "a client that left"
    return repr(peer) if peer else "a unix socket"


TransportFactory = Callable[[ProtocolLoop, Handle, ProtocolSpec], Transport]


def transport_factory(tls: Optional["TlsSource"],
                      proxy_allowed: Optional[TrustedAddresses]) -> TransportFactory:
    """How a worker makes the transports of a listener with these settings
    (its TLS context made once, here)."""
    if tls is None and proxy_allowed is None:
        return Transport
    new_session: Optional[Callable[[], TlsSession]] = None
    timeout = PROXY_HEADER_TIMEOUT
    if tls is not None:
        # Only here: a worker without TLS does not load the ssl module.
        from .tls import TlsSession, handshake_timeout, server_context

        context = server_context(tls)
        timeout = handshake_timeout(tls)

        def new_session() -> TlsSession:
            return TlsSession(context)

    def make(loop: ProtocolLoop, handle: Handle, spec: ProtocolSpec) -> Transport:
        return EdgeTransport(loop, handle, spec, new_session=new_session,
                             handshake_timeout=timeout, proxy_allowed=proxy_allowed)

    return make
