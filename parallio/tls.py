"""TLS for every protocol: the settings that reach each worker, and a
sans-I/O session.

:class:`TlsConfig` is what :func:`parallio.server` takes as ``ssl=`` (or
what ``--certfile``/``--keyfile`` make): plain, picklable data, so each
worker of every host builds its own :class:`ssl.SSLContext` from it (a
context cannot be pickled). ``ssl=`` also takes a module-level function
returning a context (each worker calls it), or an :class:`ssl.SSLContext`
itself, which only workers of the threads host can share.

:class:`TlsSession` is one connection's TLS, driven by whoever owns the
socket: ciphertext goes in (:meth:`TlsSession.handshake`,
:meth:`TlsSession.decrypt`), plaintext comes out, and what must be sent is
handed back as bytes (:meth:`TlsSession.encrypt`, :meth:`TlsSession.outgoing`).
It wraps an :class:`ssl.SSLObject` on two :class:`ssl.MemoryBIO`: no
socket, no blocking, no thread. :class:`parallio.edge.EdgeTransport`
drives it on the worker's engine, so protocols see plaintext only.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from ._ref import ObjectRef

__all__ = ["TlsConfig", "TlsSession", "TlsSetupError", "server_context", "ssl_source",
           "rfc4514_name", "CERT_REQS"]

#: ``--cert-reqs`` values: whether the server asks for a client certificate.
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
             "required": ssl.CERT_REQUIRED}
# Plaintext is taken from the session this many bytes at a time; a TLS
# record holds at most 16 KiB, so one call rarely returns less than a record.
_READ_SIZE = 64 * 1024
# The first byte of a TLS record that carries a handshake message.
_HANDSHAKE_RECORD = 0x16


class TlsSetupError(ValueError):
    """The TLS settings cannot make a working context (a missing or
    unreadable certificate, a wrong key password...)."""


@dataclass(frozen=True)
class TlsConfig:
    """A server's TLS settings, as data every worker can receive.

    ``certfile`` (PEM: the certificate, then its chain) and ``keyfile``
    (the private key; None if it is in ``certfile``) with ``password`` for
    an encrypted key; ``ca_certs`` (PEM bundle) verifies client
    certificates, which ``cert_reqs`` asks for (``ssl.CERT_NONE``,
    ``CERT_OPTIONAL`` or ``CERT_REQUIRED``, or "none", "optional",
    "required"); ``ciphers`` is an OpenSSL cipher string for TLS 1.2
    (TLS 1.3 suites are OpenSSL's defaults); ``alpn_protocols`` are offered
    in ALPN (the HTTP servers speak ``http/1.1``); ``handshake_timeout`` is
    the seconds a client gets to finish its handshake before it is cut off.

    TLS 1.2 is the oldest version accepted and renegotiation is off.
    """

    certfile: str
    keyfile: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ca_certs: Optional[str] = None
    cert_reqs: Union[int, str] = ssl.CERT_NONE
    ciphers: Optional[str] = None
    alpn_protocols: tuple[str, ...] = ("http/1.1",)
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        reqs = self.cert_reqs
        if isinstance(reqs, str):
            if reqs.lower() not in CERT_REQS:
                raise TlsSetupError(f"cert_reqs {reqs!r}: use none, optional or required")
            object.__setattr__(self, "cert_reqs", CERT_REQS[reqs.lower()])
        elif reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
            raise TlsSetupError(f"cert_reqs {reqs!r}: use 0 (none), 1 (optional) or 2 (required)")
        if self.cert_reqs != ssl.CERT_NONE and not self.ca_certs:
            raise TlsSetupError("asking for client certificates needs ca_certs "
                                "(--ca-certs) to verify them with")
        if not self.handshake_timeout > 0:
            raise TlsSetupError(f"handshake_timeout must be positive, not {self.handshake_timeout!r}")
        object.__setattr__(self, "alpn_protocols", tuple(self.alpn_protocols))

    def context(self) -> ssl.SSLContext:
        """A new server context with these settings; :class:`TlsSetupError`
        names the file that is wrong."""
        for what, path in (("certificate", self.certfile), ("key", self.keyfile),
                           ("CA certificates", self.ca_certs)):
            if path is not None and not os.path.isfile(path):
                raise TlsSetupError(f"TLS {what}: no such file {path!r}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
        key_path = self.keyfile or self.certfile
        try:
            # A callable, not None: OpenSSL would prompt on the terminal for
            # the password of an encrypted key.
            context.load_cert_chain(self.certfile, self.keyfile, self.password or _no_password)
        except _PasswordNeeded:
            raise TlsSetupError(f"TLS key {key_path!r} is encrypted: give its password "
                                "(--keyfile-password)") from None
        except (ssl.SSLError, OSError) as error:
            if self.password and isinstance(error, ssl.SSLError) and _encrypted(key_path):
                reason = "wrong key password"
            else:
                reason = _reason(error)
            key = f" with key {self.keyfile!r}" if self.keyfile else ""
            raise TlsSetupError(f"TLS: cannot load the certificate {self.certfile!r}{key}: "
                                f"{reason}") from None
        if self.ca_certs:
            try:
                context.load_verify_locations(cafile=self.ca_certs)
            except (ssl.SSLError, OSError) as error:
                raise TlsSetupError(f"TLS: cannot load the CA certificates {self.ca_certs!r}: "
                                    f"{_reason(error)}") from None
        context.verify_mode = ssl.VerifyMode(int(self.cert_reqs))
        if self.ciphers:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise TlsSetupError(f"TLS ciphers {self.ciphers!r}: OpenSSL knows none of them") from None
        if self.alpn_protocols:
            context.set_alpn_protocols(list(self.alpn_protocols))
        record_server_names(context)
        return context


class _PasswordNeeded(Exception):
    pass


def _no_password() -> bytes:
    raise _PasswordNeeded


def _encrypted(key_path: str) -> bool:
    try:
        with open(key_path, "rb") as file:
            return b"ENCRYPTED" in file.read(1 << 16)
    except OSError:
        return False


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        if error.reason == "KEY_VALUES_MISMATCH":
            return "the key does not match the certificate"
        if error.reason in (None, "PEM_LIB", "NO_START_LINE"):
            return "not a PEM certificate and key"
        return error.reason
    return getattr(error, "strerror", None) or str(error)


class _SharedContext:
    """An :class:`ssl.SSLContext` given as it is: shared by the workers of
    the threads host, and refused (with what to do instead) by the others,
    to which a context cannot be sent."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def __reduce__(self) -> Any:
        raise TypeError(
            "ssl=: an ssl.SSLContext reaches workers of the threads host only; for processes "
            "and interpreters give parallio.tls.TlsConfig(certfile=..., keyfile=...) or a "
            "module-level function that returns the context")


#: What an endpoint keeps of ``ssl=``.
TlsSource = Union[TlsConfig, ObjectRef, _SharedContext]


def ssl_source(value: Any) -> Optional[TlsSource]:
    """What :func:`parallio.server` keeps of its ``ssl=`` argument: a
    :class:`TlsConfig`, a factory's reference, or a context to share.
    Settings are tried here, on the main thread, so that a wrong file is
    one error at start-up rather than one per worker."""
    if value is None or value is False:
        return None
    if isinstance(value, TlsConfig):
        value.context()
        return value
    if isinstance(value, ssl.SSLContext):
        return _SharedContext(value)
    if isinstance(value, str) or callable(value):
        ref = ObjectRef.of(value)
        made = ref.resolve()()
        if not isinstance(made, ssl.SSLContext):
            raise TlsSetupError(f"ssl=: {ref.path} returned {type(made).__name__}, "
                                "not an ssl.SSLContext")
        return ref
    raise TypeError(f"ssl= takes a parallio.tls.TlsConfig, an ssl.SSLContext or a function "
                    f"returning one, not {type(value).__name__}")


def server_context(source: TlsSource) -> ssl.SSLContext:
    """The context a worker serves ``source`` with (made in the worker),
    recording the server names clients ask for (:attr:`TlsSession.server_name`)."""
    if isinstance(source, TlsConfig):
        return source.context()
    context = source.context if isinstance(source, _SharedContext) else source.resolve()()
    record_server_names(context)
    return context


def record_server_names(context: ssl.SSLContext) -> None:
    """Make sessions of ``context`` note the server name a client asks
    for (keeping the context's own SNI callback, which runs after)."""
    with _install_lock:
        callback = context.sni_callback
        if not isinstance(callback, _SniRecorder):
            context.sni_callback = _SniRecorder(callback)


def handshake_timeout(source: TlsSource) -> float:
    return source.handshake_timeout if isinstance(source, TlsConfig) else TlsConfig.handshake_timeout


_install_lock = threading.Lock()
# The session whose handshake runs on this thread: the SNI callback runs
# inside do_handshake(), on the thread that called it.
_handshaking = threading.local()


class _SniRecorder:
    """The context's SNI callback: notes the name the client asked for,
    then calls the callback the context had (which may switch contexts)."""

    def __init__(self, previous: Optional[Callable[..., Any]]) -> None:
        self.previous = previous

    def __call__(self, ssl_object: Any, server_name: Optional[str], context: Any) -> Any:
        session = getattr(_handshaking, "session", None)
        if session is not None:
            session.server_name = server_name
        if self.previous is not None:
            return self.previous(ssl_object, server_name, context)
        return None


class TlsSession:
    """One server-side TLS connection, sans I/O; see the module docstring.

    Feed received bytes to :meth:`handshake` until it returns True, then
    to :meth:`feed` and take the plaintext from :meth:`decrypt`. After each, send what :meth:`outgoing` returns
    (handshake messages, session tickets, alerts). :meth:`encrypt` turns
    plaintext into records to send; :meth:`close_notify` ends the session.
    Fatal errors raise :class:`ssl.SSLError`; the alert to send for them is
    in :meth:`outgoing` afterwards.
    """

    __slots__ = ("_object", "_incoming", "_outgoing", "server_name", "handshake_done",
                 "peer_closed")

    #: What the session raises for a fatal error (``except session.Error``
    #: spares its callers an import of :mod:`ssl`).
    Error = ssl.SSLError

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: The host name the client asked for (SNI), or None.
        self.server_name: Optional[str] = None
        self.handshake_done = False
        #: The client sent close_notify: no more data will come.
        self.peer_closed = False

    @staticmethod
    def looks_like_tls(first: bytes) -> bool:
        """Whether the first bytes of a connection can begin a TLS handshake."""
        return first[0] == _HANDSHAKE_RECORD

    def handshake(self, data: bytes) -> bool:
        """Feed handshake bytes; True once the handshake is complete."""
        if data:
            self._incoming.write(data)
        _handshaking.session = self
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        finally:
            _handshaking.session = None
        self.handshake_done = True
        return True

    def feed(self, data: bytes) -> None:
        """Add received records (after the handshake)."""
        self._incoming.write(data)

    def decrypt(self) -> bytes:
        """The plaintext the records fed so far complete (maybe b"").
        Sets :attr:`peer_closed` when the client sent close_notify."""
        read = self._object.read
        incoming = self._incoming
        chunks = []
        try:
            while True:
                chunk = read(_READ_SIZE)
                if not chunk:
                    self.peer_closed = True
                    break
                chunks.append(chunk)
                if not incoming.pending and not self._object.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @property
    def buffered(self) -> bool:
        """Received bytes not decrypted yet (after the handshake, data that
        came with the client's last handshake message)."""
        return bool(self._incoming.pending or self._object.pending())

    def encrypt(self, data: Any) -> bytes:
        """The records carrying ``data`` (anything :meth:`outgoing` had
        pending goes first)."""
        self._object.write(data)
        return self._outgoing.read()

    def outgoing(self) -> bytes:
        """Bytes the session has to send (b"" when none)."""
        return self._outgoing.read() if self._outgoing.pending else b""

    def close_notify(self) -> bytes:
        """The close_notify alert to send; the session sends nothing after it."""
        try:
            self._object.unwrap()
        except ssl.SSLError:
            pass  # the peer's close_notify is not awaited: the socket closes next
        return self.outgoing()

    # -- what the handshake settled ------------------------------------------
    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._object

    def peercert(self, binary_form: bool = False) -> Any:
        """The client's certificate (a dict, or DER bytes with
        ``binary_form``), verified against ``ca_certs``; None without one."""
        return self._object.getpeercert(binary_form) or None

    @property
    def alpn_protocol(self) -> Optional[str]:
        return self._object.selected_alpn_protocol()

    @property
    def cipher(self) -> Optional[tuple[str, str, int]]:
        return self._object.cipher()

    @property
    def version(self) -> Optional[str]:
        return self._object.version()


# Short names of the attribute types a certificate name uses (RFC 4514 §3,
# plus those OpenSSL prints).
_SHORT_NAMES = {
    "commonName": "CN", "countryName": "C", "localityName": "L",
    "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
    "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
}


def rfc4514_name(name: Any) -> str:
    """A certificate subject or issuer (as :meth:`ssl.SSLObject.getpeercert`
    gives it) as an RFC 4514 string: ``CN=client,O=Example,C=SE``."""
    parts = []
    for rdn in reversed(name or ()):
        parts.append("+".join(f"{_SHORT_NAMES.get(key, key)}={_escape(value)}"
                              for key, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    escaped = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if escaped[:1] in ("#", " "):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
