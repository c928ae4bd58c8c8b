"""Sans-I/O HTTP/1.1 request parser.

Feed it bytes as they arrive; pull complete requests out::

    parser = RequestParser()
    parser.feed(data)
    for request in parser:          # or: parser.next_request() until None
        ...
    if parser.wants_continue:       # headers of an Expect: 100-continue
        send(CONTINUE_RESPONSE)     # request are in, its body is not
        parser.continue_sent()

Requests may be pipelined and split at any byte. By default bodies are
buffered whole (up to ``Limits.max_body``) and delivered as
``request.body``. With ``stream_bodies=True`` :meth:`RequestParser.next_event`
delivers the :class:`Request` as soon as its head is complete, then its body
as ``bytes`` pieces, then an :class:`EndOfMessage` (with the trailers): a
server can apply backpressure by not feeding more while pieces wait.

Every protocol violation raises :class:`HttpError` carrying the status the
server should answer with; the parser is dead afterwards (each later call
raises the same error) and the connection must be closed after that answer.

Where RFC 9110/9112 leave a choice, the parser takes the strict side:

* Lines end in CRLF only. A bare LF or bare CR anywhere in the head, a chunk
  line or the trailers is a 400 (RFC 9112 §2.2 allows either; accepting bare
  LF is a classic source of front-end/back-end disagreement).
* Empty lines (CRLF) before a request line are skipped (§2.2 SHOULD).
* The request line is exactly ``method SP target SP version``. Versions
  HTTP/1.0 and HTTP/1.1 are accepted; any other ``HTTP/d.d`` is 505, anything
  else 400.
* The target is 1*VCHAR in one of the forms §3.2 allows for its method:
  origin-form (``/path?query``), absolute-form (``scheme://authority/...``),
  authority-form (``host:port``, CONNECT only), asterisk-form (``*``, OPTIONS
  only). Anything else is 400, and so is a fragment (``#``): clients never
  send one (§3.2). An absolute-form target's authority must be a valid
  ``host[:port]`` (no userinfo) and replaces the Host header as the
  request's :attr:`Request.authority` (§3.2.2).
* Header names are tokens; a space or tab before the colon, obs-fold
  (a line starting with space/tab) and control characters other than HTAB
  in values (NUL, DEL, ...) are all 400. Values lose surrounding SP/HTAB and
  are decoded as latin-1 (obs-text survives byte for byte).
* HTTP/1.1 needs exactly one Host; more than one Host is 400 in any version,
  and so is a Host value that is not ``uri-host [":" port]`` (RFC 3986
  reg-name, IPv4 or bracketed IPv6 literal; a port of digits).
* Content-Length is 1*DIGIT. Repeats (as fields or as a comma list) are
  allowed only if every value is the same string (§8.6 MAY); otherwise 400.
  A length over ``Limits.max_body`` is 413 before any body byte is read.
* Transfer-Encoding: only ``chunked`` is implemented. The codings of all TE
  fields form one list (empty elements ignored, RFC 9110 §5.6.1). If that list
  does not end in ``chunked`` the framing is unknowable: 400 (§6.3). If it
  names ``chunked`` more than once: 400 (§6.1). If ``chunked`` is last but
  other codings precede it: 501 (§6.1, unsupported coding). TE in an HTTP/1.0
  request: 400 (§6.1 says treat the framing as faulty). TE together with
  Content-Length: 400 (§6.1 allows rejecting; it is the smuggling pattern).
* Chunk lines: 1 to 16 hex digits (a 64-bit size), then optional chunk
  extensions exactly as §7.1.1 writes them (``BWS ";" BWS name [BWS "=" BWS
  value]``, the value a token or a quoted string; ignored). Trailing
  whitespace without an extension, a bare ``;``, garbage, a longer size, a
  missing CRLF after the data: 400.
* Trailers obey the header rules; Content-Length, Transfer-Encoding and Host
  in trailers are 400 (they must never be merged into the head, §6.5.1).
* Expect: ``100-continue`` (case-insensitive) sets ``expect_continue`` for
  HTTP/1.1; it is ignored in HTTP/1.0 (RFC 9110 §10.1.1). Any other
  expectation is 417.
* Connection is a comma list of case-insensitive tokens. HTTP/1.1 keeps the
  connection alive unless ``close`` is listed; HTTP/1.0 only if
  ``keep-alive`` is listed and ``close`` is not.
* After a request whose ``keep_alive`` is False the parser accepts nothing
  more: ``feed`` discards data and ``next_request`` returns None
  (``finished`` is True). RFC 9112 §9.6 forbids processing such requests, and
  answering them with an error would corrupt the response stream.

Input that is already hopeless is refused before its head is complete: a
request line that cannot become valid (a byte that is not a token character
in the method, a control character, a third space: a TLS handshake, binary,
garbage), a complete but malformed request line, a bare LF.

Sizes are bounded by :class:`Limits`: request line (414), header section or
header count (431; trailers count separately against the same limits), body
(413: Content-Length at once, chunked as soon as the running total of
announced chunk sizes passes it), chunk line (400).

Most heads are validated by one regular expression compiled from the RFC
grammar (the work runs in C) and their fields are split only when someone
reads :attr:`Request.headers`; a head the expression does not take goes
through the field-by-field parser, which names exactly what is wrong. Both
accept the same heads and produce the same requests (the tests check it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Protocol, Union
from urllib.parse import unquote

if TYPE_CHECKING:
    from .forwarded import Forwarded

__all__ = ["HttpError", "Limits", "Headers", "Request", "RequestParser", "EndOfMessage",
           "TCHAR"]


class HttpError(Exception):
    """A request the server must refuse with ``status``; close afterwards."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits; each violation maps to the status in its comment."""

    max_request_line: int = 8 * 1024  # bytes, without CRLF -> 414
    max_header_block: int = 64 * 1024  # field lines incl. their CRLFs -> 431
    max_headers: int = 100  # field lines -> 431
    max_body: int = 16 * 1024 * 1024  # decoded body bytes -> 413
    max_chunk_line: int = 4 * 1024  # chunk size + extensions -> 400


# --- character classes -------------------------------------------------------

#: RFC 9110 tchar: the bytes of a token.
TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# Everything a head may hold apart from CR and LF: HTAB, SP, VCHAR, obs-text.
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# What a request line may hold: SP and VCHAR.
_LINE_BYTES = bytes(range(0x20, 0x7F))
_HEXDIG = b"0123456789abcdefABCDEF"
_SCHEME_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-."

# The whole head of the common request -- origin-form target, HTTP/1.x,
# well-formed field lines -- in one expression: method, target, minor
# version, field section (each line with its CRLF).
_HEAD = re.compile(
    rb"(" + _TOKEN + rb") (/[\x21-\x7e]*) HTTP/1\.([01])\r\n"
    rb"((?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n")
# The fields that decide framing, routing or connection handling.
_SPECIAL = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))
# Those fields, found in a lowercased field section that begins with LF.
_SPECIAL_LINE = re.compile(
    rb"\n(host|connection|content-length|transfer-encoding|expect):[\t ]*([^\r]*)")
_SPECIAL_KEYS = {name.encode(): name for name in _SPECIAL}
# A Host that is a plain name or IPv4 address with an optional port: what
# the cheap check accepts; anything else takes the full grammar.
_PLAIN_HOST_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:"
_TRAILER_FORBIDDEN = frozenset(("host", "content-length", "transfer-encoding"))
# One field line of a validated section: name, value (trailing SP/HTAB left).
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[\t ]*([^\r]*)\r\n")
# RFC 3986 authority without userinfo: reg-name, IPv4 or [IP-literal], port.
_AUTHORITY = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")
# RFC 9112 §7.1.1 chunk-ext, after the size.
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = re.compile(
    rb"(?:[\t ]*;[\t ]*" + _TOKEN + rb"(?:[\t ]*=[\t ]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")

# Validated-name caches: a hit both proves the name is a token and gives its
# canonical form, so the common case costs one dict lookup. Bounded so that a
# client inventing names cannot grow them without limit.
_CACHE_MAX = 1024
_METHODS: dict[str, str] = {
    m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}
_METHOD_BYTES: dict[bytes, str] = {m.encode(): m for m in _METHODS}
_FIELD_NAMES: dict[str, str] = {}
_FIELD_NAME_BYTES: dict[bytes, str] = {}


def _lower_name(name: bytes) -> str:
    """A lowercase field name (a token) as a str, cached."""
    key = _FIELD_NAME_BYTES.get(name)
    if key is None:
        key = name.decode("ascii")
        if len(_FIELD_NAME_BYTES) < _CACHE_MAX:
            _FIELD_NAME_BYTES[name] = key
    return key


def _raw_fields(section: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a validated field section (each line with its CRLF),
    as (lowercase name, value) bytes."""
    return [(name.lower(), value.rstrip(b"\t "))
            for name, value in _FIELD_LINE.findall(section)]


class Headers:
    """Header fields in arrival order, names lowercased, values as str.

    Read-only. Made from a request's raw field section, the fields are split
    on first use: a handler that reads no header pays for none.

    Lookups are case-insensitive linear scans: requests carry a handful of
    fields, and building a dict per request would cost more than it saves.
    """

    __slots__ = ("_items", "_raw", "_section")

    def __init__(self, items: Optional[list[tuple[str, str]]] = None, *,
                 section: bytes = b"") -> None:
        self._items = items
        self._raw: Optional[list[tuple[bytes, bytes]]] = None
        self._section = section

    def _fields(self) -> list[tuple[str, str]]:
        items = self._items
        if items is None:
            names = _FIELD_NAME_BYTES.get
            items = self._items = [
                (names(name) or _lower_name(name), value.decode("latin-1"))
                for name, value in self.raw()]
        return items

    def raw(self) -> list[tuple[bytes, bytes]]:
        """The fields as (lowercase name, value) byte pairs, as received:
        what ASGI hands applications."""
        raw = self._raw
        if raw is None:
            if self._items is None:
                raw = _raw_fields(self._section)
                self._section = b""
            else:
                raw = [(key.encode("ascii"), value.encode("latin-1"))
                       for key, value in self._items]
            self._raw = raw
        return raw

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of field ``name``, or ``default``."""
        name = name.lower()
        for key, value in self._fields():
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of field ``name``, in arrival order."""
        name = name.lower()
        return [value for key, value in self._fields() if key == name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        for key, _ in self._fields():
            if key == name:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._fields() == other._fields()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._fields()!r})"


_NO_HEADERS = Headers([])


class Request:
    """One request.

    ``target`` is the request-target exactly as sent. ``raw_path`` and
    ``query`` split it at the first ``?`` (for absolute-form, after the
    authority; an empty path becomes ``/``); ``path`` is ``raw_path``
    percent-decoded as UTF-8 (invalid sequences become U+FFFD). For ``*``
    both paths are ``*``; for CONNECT's authority-form they are empty.
    ``authority`` is the host the request is for, lowercased (host names
    are case-insensitive): an absolute-form target's authority, else the
    Host header's value ("" without one).

    With a streaming parser, ``has_body`` says whether body pieces follow
    the head; ``body`` stays empty.

    ``headers`` is made on first use from the head's field section.

    A server sets ``origin`` to the connection the request came on; then
    ``client``, ``scheme`` and ``host`` say where the request came from as
    the application should see it, trusted proxies' ``X-Forwarded-*`` and
    ``Forwarded`` fields applied (:mod:`parallio.http.forwarded`).
    """

    __slots__ = (
        "method",
        "target",
        "raw_path",
        "path",
        "query",
        "http_version",
        "_headers",
        "body",
        "trailers",
        "keep_alive",
        "expect_continue",
        "authority",
        "has_body",
        "origin",
    )

    origin: Optional["RequestOrigin"]

    def __init__(
        self,
        method: str,
        target: str,
        raw_path: str,
        query: str,
        http_version: tuple[int, int],
        headers: Union[Headers, bytes],
        keep_alive: bool,
        expect_continue: bool,
        authority: str = "",
        body: bytes = b"",
        trailers: Headers = _NO_HEADERS,
    ) -> None:
        self.method = method
        self.target = target
        self.raw_path = raw_path
        self.path = unquote(raw_path, errors="replace") if "%" in raw_path else raw_path
        self.query = query
        self.http_version = http_version
        # A Headers, or the raw field section to make one of when asked.
        self._headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.authority = authority
        self.body = body
        self.trailers = trailers
        self.has_body = False
        # ``origin`` stays unset until a server sets it: nothing per request
        # for what only applications asking where a request came from use.

    @property
    def client(self) -> object:
        """The client's address, ``(host, port)``: the peer, or what a
        trusted proxy said (port 0 if it named none); None without origin."""
        origin = self._origin()
        return None if origin is None else origin.forwarded(self).client

    @property
    def scheme(self) -> str:
        """"https" or "http": what the client used, a trusted proxy's word included."""
        origin = self._origin()
        return "http" if origin is None else origin.forwarded(self).scheme

    @property
    def host(self) -> str:
        """The host the client asked for: a trusted proxy's
        ``X-Forwarded-Host``/``Forwarded: host=``, else :attr:`authority`."""
        origin = self._origin()
        host = None if origin is None else origin.forwarded(self).host
        return host if host is not None else self.authority

    def _origin(self) -> Optional["RequestOrigin"]:
        return getattr(self, "origin", None)

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers.__class__ is bytes:
            headers = self._headers = Headers(section=headers)
        return headers  # type: ignore[return-value]

    def __repr__(self) -> str:
        major, minor = self.http_version
        return (
            f"<Request {self.method} {self.target} HTTP/{major}.{minor} "
            f"headers={len(self.headers)} body={len(self.body)}B "
            f"keep_alive={self.keep_alive}>"
        )


class RequestOrigin(Protocol):
    """What :attr:`Request.origin` is: the connection a request came on."""

    def forwarded(self, request: "Request") -> "Forwarded": ...


class EndOfMessage:
    """The end of a request's body, with its trailers (streaming parsers)."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: Headers = _NO_HEADERS) -> None:
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"<EndOfMessage trailers={len(self.trailers)}>"


Buffer = Union[bytes, bytearray]

def _is_token(text: str) -> bool:
    return bool(text) and text.isascii() and not text.encode("ascii").translate(None, TCHAR)


def _canonical_name(name: str) -> str:
    key = _FIELD_NAMES.get(name)
    if key is not None:
        return key
    if not _is_token(name):
        raise _field_name_error(name)
    key = name.lower()
    if len(_FIELD_NAMES) < _CACHE_MAX:
        _FIELD_NAMES[name] = key
    return key


def _field_name_error(name: str) -> HttpError:
    if not name:
        return HttpError(400, "empty header name")
    if name[0] in " \t":
        return HttpError(400, "obsolete line folding (line starts with whitespace)")
    if name[-1] in " \t":
        return HttpError(400, "whitespace between header name and colon")
    return HttpError(400, f"invalid header name {name[:64]!r}")


def _parse_fields(
    lines: list[str], limits: Limits
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Field lines as (lowercase name, stripped value) pairs, plus the pairs
    whose name is in ``_SPECIAL`` (collected here to spare a second pass).

    The caller has already rejected control characters and bare CR/LF.
    """
    if len(lines) > limits.max_headers:
        raise HttpError(431, f"more than {limits.max_headers} header fields")
    items: list[tuple[str, str]] = []
    special: list[tuple[str, str]] = []
    append = items.append
    cached = _FIELD_NAMES.get
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            if line[:1] in (" ", "\t"):
                raise HttpError(400, "obsolete line folding (line starts with whitespace)")
            raise HttpError(400, "header line without a colon")
        key = cached(name) or _canonical_name(name)
        value = value.strip(" \t")
        append((key, value))
        if key in _SPECIAL:
            special.append((key, value))
    return items, special


def _head_bytes_error(head: Union[bytes, bytearray]) -> HttpError:
    """Explain why ``head`` failed the fast character check."""
    for index, byte in enumerate(head):
        if byte == 0x0D:
            if head[index + 1 : index + 2] != b"\n":
                return HttpError(400, "bare CR in head")
        elif byte == 0x0A:
            if head[index - 1 : index] != b"\r":
                return HttpError(400, "bare LF line ending (CRLF required)")
        elif byte == 0:
            return HttpError(400, "NUL byte in head")
        elif byte < 0x20 and byte != 0x09 or byte == 0x7F:
            return HttpError(400, f"control character 0x{byte:02x} in head")
    return HttpError(400, "invalid character in head")


def _reject_bare_lf(buf: Buffer, pos: int, scan: int) -> None:
    """Raise if an LF without its CR arrived in a section still waiting for
    its CRLFCRLF: an LF-only client would otherwise leave the parser waiting
    for ever. Only bytes from ``scan`` on (those not searched before) are
    looked at, which keeps a slowly arriving section linear."""
    newline = buf.find(b"\n", max(pos, scan - 1))
    while newline >= 0:
        if newline == pos or buf[newline - 1] != 0x0D:
            raise HttpError(400, "bare LF line ending (CRLF required)")
        newline = buf.find(b"\n", newline + 1)


def _check_field_bytes(block: Union[bytes, bytearray], line_count: int) -> None:
    # Once everything legal except CR/LF is deleted, only the CRLFs that
    # separate ``line_count`` lines may remain; anything else is a control
    # character or a bare CR/LF.
    if len(block.translate(None, _FIELD_BYTES)) != 2 * (line_count - 1):
        raise _head_bytes_error(block)


# --- framing helpers ---------------------------------------------------------


def _split_tokens(values: list[str]) -> list[str]:
    """A comma-list field (all its lines) as lowercase elements, empties dropped."""
    if len(values) == 1 and "," not in values[0]:
        # One field with one element: the common Connection: keep-alive.
        element = values[0].strip(" \t").lower()
        return [element] if element else []
    tokens = []
    for value in values:
        for element in value.split(","):
            element = element.strip(" \t").lower()
            if element:
                tokens.append(element)
    return tokens


def _content_length(values: list[str], max_body: int) -> int:
    first = None
    for value in values:
        for element in value.split(","):
            element = element.strip(" \t")
            if not (element.isascii() and element.isdigit()):
                raise HttpError(400, f"invalid Content-Length {value[:64]!r}")
            if first is None:
                first = element
            elif element != first:
                raise HttpError(400, "conflicting Content-Length values")
    assert first is not None
    # Compare digit counts first: int() of a huge string is slow, and refused
    # past sys.get_int_max_str_digits().
    significant = first.lstrip("0") or "0"
    if len(significant) > len(str(max_body)) or int(significant) > max_body:
        raise HttpError(413, f"Content-Length {first[:32]} exceeds the {max_body}-byte limit")
    return int(significant)


def _check_transfer_encoding(values: list[str]) -> None:
    codings = _split_tokens(values)
    if not codings or codings[-1] != "chunked":
        raise HttpError(400, "Transfer-Encoding does not end in chunked")
    if codings.count("chunked") > 1:
        raise HttpError(400, "chunked applied more than once")
    if len(codings) > 1:
        raise HttpError(501, f"unsupported transfer coding {codings[0][:32]!r}")


def _check_authority(authority: str, what: str) -> None:
    """``authority`` must be ``uri-host [":" port]`` (RFC 3986 reg-name,
    IPv4, or a bracketed IPv6 literal)."""
    if not authority.isascii() or _AUTHORITY.fullmatch(authority) is None:
        raise HttpError(400, f"invalid {what} {authority[:64]!r}")
    if authority.startswith("["):
        import ipaddress  # rare: bracketed literals only

        literal = authority[1:authority.index("]")]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise HttpError(400, f"invalid IPv6 literal in {what} {authority[:64]!r}") from None


def _split_absolute_form(target: str) -> tuple[str, str, str]:
    """``scheme://authority/path?query`` -> (authority, raw_path, query)."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme[:1].isalpha() or scheme.encode("ascii").translate(None, _SCHEME_BYTES):
        raise HttpError(400, f"invalid request target {target[:64]!r}")
    cut = len(rest)
    for delimiter in "/?":
        index = rest.find(delimiter)
        if 0 <= index < cut:
            cut = index
    if cut == 0:
        raise HttpError(400, "absolute-form target without authority")
    authority = rest[:cut]
    _check_authority(authority, "request target authority")
    raw_path, _, query = rest[cut:].partition("?")
    return authority, raw_path or "/", query


def _chunk_size(line: Buffer) -> int:
    digits = len(line) - len(line.lstrip(_HEXDIG))
    if digits == 0:
        raise HttpError(400, f"invalid chunk size line {bytes(line[:32])!r}")
    if digits > 16:
        raise HttpError(400, "chunk size does not fit in 64 bits")
    if len(line) > digits and _CHUNK_EXT.fullmatch(line, digits) is None:
        raise HttpError(400, f"invalid chunk extension {bytes(line[digits:digits + 32])!r}")
    return int(line[:digits], 16)


def _check_authority_form(target: str) -> None:
    host, colon, port = target.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()):
        raise HttpError(400, "CONNECT target must be host:port")
    _check_authority(target, "CONNECT target")


def _parse_request_line(line: str) -> tuple[str, str, str, str, tuple[int, int], Optional[str]]:
    """method, target, raw path, query, version, and the target's
    authority (absolute- and authority-form only)."""
    parts = line.split(" ")
    if len(parts) != 3 or not line.isascii() or "\t" in line or not parts[1]:
        raise HttpError(400, f"malformed request line {line[:64]!r}")
    method, target, version_text = parts
    if version_text == "HTTP/1.1":
        version = (1, 1)
    elif version_text == "HTTP/1.0":
        version = (1, 0)
    elif (
        len(version_text) == 8
        and version_text.startswith("HTTP/")
        and version_text[5].isdigit()
        and version_text[6] == "."
        and version_text[7].isdigit()
    ):
        raise HttpError(505, f"unsupported version {version_text}")
    else:
        raise HttpError(400, f"malformed HTTP version {version_text[:16]!r}")

    known = _METHODS.get(method)
    if known is None:
        if not _is_token(method):
            raise HttpError(400, f"invalid method {method[:32]!r}")
        if len(_METHODS) < _CACHE_MAX:
            _METHODS[method] = method
    else:
        method = known

    if "#" in target:
        raise HttpError(400, "request target with a fragment")
    authority = None
    if target[:1] == "/":
        if method == "CONNECT":
            raise HttpError(400, "CONNECT needs an authority-form target")
        raw_path, _, query = target.partition("?")
    elif not target:
        raise HttpError(400, "empty request target")
    elif target == "*":
        if method != "OPTIONS":
            raise HttpError(400, "asterisk-form target is only for OPTIONS")
        raw_path, query = "*", ""
    elif method == "CONNECT":
        _check_authority_form(target)
        authority, raw_path, query = target, "", ""
    else:
        authority, raw_path, query = _split_absolute_form(target)
    return method, target, raw_path, query, version, authority


_CHUNKED = -1  # body length meaning "chunked"

#: Request's constructor arguments before the body.
_HeadFields = tuple[str, str, str, str, tuple[int, int], Union[Headers, bytes], bool, bool, str]


def _framing(version: tuple[int, int], special: list[tuple[str, str]],
             limits: Limits) -> tuple[bool, bool, int, Optional[str]]:
    """What the fields that matter say: keep-alive, expect-continue, the
    body length (``_CHUNKED`` for chunked) and the Host value (None if
    absent)."""
    host: Optional[str] = None
    hosts = 0
    lengths: Optional[list[str]] = None
    codings: Optional[list[str]] = None
    connection: Optional[list[str]] = None
    expect: Optional[list[str]] = None
    for key, value in special:
        if key == "host":
            hosts += 1
            host = value
            _check_host(value)
        elif key == "connection":
            connection = [value] if connection is None else connection + [value]
        elif key == "content-length":
            lengths = [value] if lengths is None else lengths + [value]
        elif key == "transfer-encoding":
            codings = [value] if codings is None else codings + [value]
        else:
            expect = [value] if expect is None else expect + [value]
    if hosts > 1:
        raise HttpError(400, "more than one Host header")
    if hosts == 0 and version == (1, 1):
        raise HttpError(400, "HTTP/1.1 request without Host")

    if connection is None:
        keep_alive = version == (1, 1)
    else:
        tokens = _split_tokens(connection)
        keep_alive = "close" not in tokens and (version == (1, 1) or "keep-alive" in tokens)

    expect_continue = False
    if expect is not None:
        for token in _split_tokens(expect):
            if token != "100-continue":
                raise HttpError(417, f"unsupported expectation {token[:32]!r}")
            expect_continue = version == (1, 1)

    if codings is not None:
        if version == (1, 0):
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        _check_transfer_encoding(codings)
        body_length = _CHUNKED
    elif lengths is not None:
        body_length = _content_length(lengths, limits.max_body)
    else:
        body_length = 0
    return keep_alive, expect_continue, body_length, host


def _parse_head(head: Buffer, limits: Limits) -> tuple[_HeadFields, int]:
    """Validate a request head (request line and field lines, without the
    final blank line) field by field; return Request's constructor
    arguments and the body length (``_CHUNKED`` for chunked). The reference
    for :func:`_parse_common_head`, and what names the fault in a head that
    one does not take."""
    # Faults are reported in the order the incremental checks meet them as
    # bytes arrive, so a head gets the same status however it was cut: the
    # request line first, then the bytes of the fields, then their size.
    lines = head.decode("latin-1").split("\r\n")
    line_length = len(lines[0])  # latin-1: one character per byte
    if line_length > limits.max_request_line:
        raise HttpError(414, f"request line longer than {limits.max_request_line} bytes")
    _check_field_bytes(head[:line_length], 1)
    method, target, raw_path, query, version, target_authority = _parse_request_line(lines[0])
    if len(head.translate(None, _FIELD_BYTES)) != 2 * (len(lines) - 1):
        raise _head_bytes_error(head)
    # The header section: each field line with its CRLF.
    if len(head) - line_length > limits.max_header_block:
        raise HttpError(431, f"header section larger than {limits.max_header_block} bytes")
    items, special = _parse_fields(lines[1:], limits)
    keep_alive, expect_continue, body_length, host = _framing(version, special, limits)
    authority = (target_authority if target_authority is not None else (host or "")).lower()
    fields = (method, target, raw_path, query, version, Headers(items), keep_alive,
              expect_continue, authority)
    return fields, body_length


# Host values already found valid, so the same Host on every request of a
# connection (of every connection, mostly) costs one lookup. Bounded, as the
# name caches are: a client inventing hosts cannot grow it.
_VALID_HOSTS: dict[bytes, str] = {}


def _check_host(host: str) -> None:
    raw = host.encode("latin-1")
    if raw.translate(None, _PLAIN_HOST_BYTES) or raw.count(b":") > 1 or \
            not (raw.rpartition(b":")[2].isdigit() or raw.endswith(b":") or b":" not in raw):
        _check_authority(host, "Host")


def _valid_host(raw: bytes) -> str:
    """A lowercased Host value (the cache's key), checked; as str."""
    host = _VALID_HOSTS.get(raw)
    if host is None:
        host = raw.decode("latin-1")
        _check_host(host)
        if len(_VALID_HOSTS) < _CACHE_MAX:
            _VALID_HOSTS[raw] = host
    return host


def _parse_common_head(buf: Buffer, start: int,
                       limits: Limits) -> Optional[tuple[Request, int, int]]:
    """The head at ``buf[start:]``, if it is there whole and of the common
    shape, parsed in one expression: (request, body length, where the head
    ends). None when it is not there, or not of that shape (another target
    form, another version, anything malformed, a limit reached) and
    :func:`_parse_head` must decide. Accepts exactly what that accepts."""
    match = _HEAD.match(buf, start)
    if match is None:
        return None
    method_bytes, target_bytes, minor, section = match.groups()
    method = _METHOD_BYTES.get(method_bytes)
    size = len(section)
    if (method is None or method == "CONNECT" or size > limits.max_header_block
            or match.end(2) - start + 9 > limits.max_request_line or b"#" in target_bytes
            or size > 4 * limits.max_headers and section.count(b"\n") > limits.max_headers):
        return None
    target = target_bytes.decode("ascii")
    raw_path, _, query = target.partition("?")
    version = (1, 1) if minor == b"1" else (1, 0)
    end = match.end()
    found = _SPECIAL_LINE.findall(buf[match.start(4) - 1:end].lower())
    count = len(found)
    if count and found[0][0] == b"host" and (
            count == 1 or count == 2 and found[1][0] == b"connection"):
        # The usual fields, decided here: one Host, at most one Connection
        # with one token.
        host = _valid_host(found[0][1].rstrip(b"\t "))
        if count == 1:
            return Request(method, target, raw_path, query, version, section,
                           version == (1, 1), False, host), 0, end
        token = found[1][1].rstrip(b"\t ")
        if token == b"keep-alive" or token == b"close":
            return Request(method, target, raw_path, query, version, section,
                           token == b"keep-alive", False, host), 0, end
    keys = _SPECIAL_KEYS
    special = [(keys[name], value.rstrip(b"\t ").decode("latin-1")) for name, value in found]
    keep_alive, expect_continue, body_length, found_host = _framing(version, special, limits)
    return Request(method, target, raw_path, query, version, section, keep_alive, expect_continue,
                   found_host or ""), body_length, end


# --- the parser ---------------------------------------------------------------

# Parser states.
_HEAD_STATE = 0  # between requests, or inside a request head
_LENGTH_BODY = 1  # reading a Content-Length body
_CHUNK_LINE = 2  # expecting a chunk-size line
_CHUNK_DATA = 3  # inside chunk data
_CHUNK_END = 4  # expecting the CRLF after chunk data
_TRAILERS = 5  # expecting the trailer section
_BODY_DONE = 6  # the body is complete (streaming: EndOfMessage not yet taken)
_FINISHED = 7  # a non-keep-alive request was delivered; ignore the rest
_DEAD = 8  # an HttpError was raised

# Request line progress while its CRLF has not arrived.
_IN_METHOD, _IN_TARGET, _IN_VERSION, _LINE_DONE = range(4)


class RequestParser:
    """Incremental HTTP/1.1 request parser; see the module docstring."""

    __slots__ = (
        "_limits",
        "_buf",
        "_pos",
        "_scan",
        "_line_scan",
        "_line_state",
        "_state",
        "_error",
        "_pending",
        "_body",
        "_remaining",
        "_body_size",
        "_trailers",
        "wants_continue",
        "_stream",
    )

    def __init__(self, limits: Optional[Limits] = None, *, stream_bodies: bool = False) -> None:
        self._limits = limits if limits is not None else Limits()
        # Unconsumed input is _buf[_pos:]. _buf is the caller's bytes object
        # when a feed arrives with nothing left over (no copy); otherwise a
        # bytearray that later feeds append to, so a slowly arriving head is
        # not copied over and over.
        self._buf: Buffer = b""
        self._pos = 0
        # Where the next search for the end of the head may start (bytes
        # before it were already searched) -- keeps slow heads linear.
        self._scan = 0
        # How far the incomplete request line has been checked, and where
        # in its grammar that point is.
        self._line_scan = 0
        self._line_state = _IN_METHOD
        self._state = _HEAD_STATE
        self._error: Optional[HttpError] = None
        self._pending: Optional[Request] = None  # head parsed, body in progress
        self._body: Optional[bytearray] = None  # a buffered body in progress
        self._remaining = 0  # body or chunk bytes still to read
        self._body_size = 0  # decoded body bytes so far (chunked)
        self._trailers = _NO_HEADERS
        #: True while a request sent ``Expect: 100-continue``, its head is
        #: complete, no byte of its body has been consumed yet and
        #: :meth:`continue_sent` was not called: the server should send
        #: ``HTTP/1.1 100 Continue`` (or a final error response) now.
        #: Read-only.
        self.wants_continue = False
        self._stream = stream_bodies

    # -- public API ---------------------------------------------------------

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Buffer ``data``; parsing happens in :meth:`next_request`."""
        if self._error is not None:
            raise self._error
        if self._state == _FINISHED or not data:
            return
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            self._scan = 0
            self._line_scan = 0
            return
        if isinstance(buf, bytearray):
            del buf[:pos]  # O(1): CPython moves the bytearray's start
        else:
            buf = bytearray(memoryview(buf)[pos:])
        buf += data
        self._buf = buf
        self._pos = 0
        self._scan = max(0, self._scan - pos)
        self._line_scan = max(0, self._line_scan - pos)

    def next_request(self) -> Optional[Request]:
        """The next complete request, body included, or None until more
        data is fed (buffering parsers)."""
        if self._stream:
            raise RuntimeError("a streaming parser delivers requests through next_event()")
        if self._error is not None:
            raise self._error
        state = self._state
        try:
            if state == _HEAD_STATE:
                if self._pos >= len(self._buf):
                    return None
                request = self._read_head()
                if request is None or self._pending is None:
                    return request
            elif state == _FINISHED:
                return None
            return self._buffer_body()
        except HttpError as error:
            self._die(error)
            raise

    def next_event(self) -> Union[Request, bytes, "EndOfMessage", None]:
        """The next event of a streaming parser: a :class:`Request` once its
        head is complete, then its body as ``bytes`` pieces, then an
        :class:`EndOfMessage`; None until more data is fed."""
        if not self._stream:
            raise RuntimeError("next_event() is for parsers made with stream_bodies=True")
        if self._error is not None:
            raise self._error
        state = self._state
        try:
            if state == _HEAD_STATE:
                if self._pos >= len(self._buf):
                    return None
                return self._read_head()
            if state == _FINISHED:
                return None
            if state == _BODY_DONE:
                return self._end_of_message()
            piece = self._body_piece()
            if piece is None and self._state == _BODY_DONE:
                return self._end_of_message()
            return piece
        except HttpError as error:
            self._die(error)
            raise

    def __iter__(self) -> Iterator[Request]:
        """Every request that is complete now."""
        while (request := self.next_request()) is not None:
            yield request

    def continue_sent(self) -> None:
        """Record that the 100 Continue response went out."""
        self.wants_continue = False

    @property
    def finished(self) -> bool:
        """True after a request with ``keep_alive`` False was returned."""
        return self._state == _FINISHED

    @property
    def in_progress(self) -> bool:
        """True if part of a request has been received (a server closing
        an idle connection would answer 408 only in this case)."""
        if self._state == _HEAD_STATE:
            buf = self._buf
            pos = self._pos
            while buf.startswith(b"\r\n", pos):
                pos += 2
            return pos < len(buf)
        return self._state not in (_FINISHED, _DEAD)

    @property
    def head_in_progress(self) -> bool:
        """True while part of a request head (not yet complete) has been
        received: what the header timeout bounds."""
        return self._state == _HEAD_STATE and self.in_progress

    @property
    def body_in_progress(self) -> bool:
        """True while the body of a request is being received (buffering
        parsers: the request is not returned yet)."""
        return self._pending is not None

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed, plus the body buffered so far."""
        return len(self._buf) - self._pos + (len(self._body) if self._body else 0)

    @property
    def limits(self) -> Limits:
        return self._limits

    def detach(self) -> bytes:
        """Stop parsing; return the received bytes not yet parsed.

        For a protocol switch (CONNECT tunnel, Upgrade) after the request
        that asked for it: the returned bytes belong to the new protocol.
        Only valid between requests.
        """
        if self._error is not None:
            raise self._error
        if self._state not in (_HEAD_STATE, _FINISHED) or self._line_state != _IN_METHOD \
                or self._line_scan > self._pos:
            raise RuntimeError("detach() in the middle of a request")
        rest = bytes(self._buf[self._pos :])
        self._buf = b""
        self._pos = 0
        self._state = _FINISHED
        return rest

    def _die(self, error: HttpError) -> None:
        self._error = error
        self._state = _DEAD
        self._pending = None
        self._body = None

    # -- head ---------------------------------------------------------------

    def _read_head(self) -> Optional[Request]:
        buf = self._buf
        pos = self._pos
        scan = self._scan
        # A head arriving whole (the common case) goes straight to the
        # expression; one arriving in pieces is searched for its end first,
        # so that its start is never matched again and again.
        parsed = _parse_common_head(buf, pos, self._limits) if scan <= pos else None
        if parsed is None:
            end = buf.find(b"\r\n\r\n", scan if scan > pos else pos)
            if end < 0:
                self._incomplete_head(buf, pos)
                return None
            if scan > pos:
                parsed = _parse_common_head(buf, pos, self._limits)
            if parsed is None:
                if buf.startswith(b"\r\n", pos):
                    # RFC 9112 §2.2: ignore empty lines before the request
                    # line (some clients send a stray CRLF after a POST body).
                    while buf.startswith(b"\r\n", pos):
                        pos += 2
                    self._pos = self._scan = pos
                    return self._read_head()
                fields, body_length = _parse_head(buf[pos:end], self._limits)
                parsed = Request(*fields), body_length, end + 4
        request, body_length, pos = parsed
        self._line_state = _IN_METHOD
        if body_length:
            if self._stream:
                request.has_body = True
                self._pos = pos
                self._begin_body(request, body_length)
                return request
            if 0 < body_length <= len(buf) - pos:
                # Whole body present: the common case, no copy into a bytearray.
                request.body = bytes(buf[pos : pos + body_length])
                pos += body_length
            else:
                self._pos = pos
                self._begin_body(request, body_length)
                self._body = bytearray()
                return request
        elif self._stream:
            self._pos = self._scan = pos
            self._pending = request
            self._state = _BODY_DONE
            return request
        self._consumed(pos)
        if not request.keep_alive:
            self._finish_connection()
        return request

    def _consumed(self, pos: int) -> None:
        """Input up to ``pos`` is parsed; let go of a buffer used up."""
        if pos >= len(self._buf):
            self._buf = b""
            pos = 0
        self._pos = self._scan = self._line_scan = pos

    def _incomplete_head(self, buf: Buffer, pos: int) -> None:
        """No blank line yet: enforce limits and reject what is already
        hopeless, so a garbage sender does not hold buffers until the limit."""
        while buf.startswith(b"\r\n", pos):
            pos += 2
            self._pos = pos
        size = len(buf)
        _reject_bare_lf(buf, pos, self._scan)
        self._scan = max(pos, size - 3)
        if pos >= size:
            return
        limits = self._limits
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            # A final CR may be the start of the line's CRLF.
            if size - pos - buf.endswith(b"\r") > limits.max_request_line:
                raise HttpError(414, f"request line longer than {limits.max_request_line} bytes")
            self._check_partial_line(buf, pos, size - buf.endswith(b"\r"))
            return
        if line_end - pos > limits.max_request_line:
            raise HttpError(414, f"request line longer than {limits.max_request_line} bytes")
        if size - (line_end + 2) >= limits.max_header_block + 2:
            raise HttpError(431, f"header section larger than {limits.max_header_block} bytes")
        if self._line_state != _LINE_DONE:
            line = buf[pos:line_end]
            _check_field_bytes(line, 1)
            _parse_request_line(line.decode("latin-1"))
            self._line_state = _LINE_DONE

    def _check_partial_line(self, buf: Buffer, pos: int, end: int) -> None:
        """Refuse a request line that can no longer become valid, looking
        only at the bytes that arrived since the last look."""
        start = max(pos, self._line_scan)
        self._line_scan = end
        if start >= end:
            return
        if buf.find(b"\r", start, end) >= 0:
            raise HttpError(400, "bare CR in request line")
        piece = buf[start:end]
        if piece.translate(None, _LINE_BYTES):
            raise HttpError(400, "control character or non-ASCII byte in request line")
        state = self._line_state
        offset = start
        while state < _IN_VERSION:
            space = buf.find(b" ", offset, end)
            if state == _IN_METHOD:
                method = buf[offset:end if space < 0 else space]
                if method.translate(None, TCHAR) or (space == pos):
                    raise HttpError(400, "request does not start with a method")
            if space < 0:
                break
            state += 1
            offset = space + 1
        if state == _IN_VERSION and buf.find(b" ", offset, end) >= 0:
            raise HttpError(400, "malformed request line (more than two spaces)")
        self._line_state = state

    # -- bodies ---------------------------------------------------------------

    def _begin_body(self, request: Request, body_length: int) -> None:
        self._pending = request
        if body_length == _CHUNKED:
            self._state = _CHUNK_LINE
            self._remaining = 0
        else:
            self._state = _LENGTH_BODY
            self._remaining = body_length
        self._body_size = 0
        self._trailers = _NO_HEADERS
        # Only worth a 100 Continue if the client has sent nothing of the
        # body yet; it may have started without waiting (RFC 9110 §10.1.1).
        self.wants_continue = request.expect_continue and self._pos >= len(self._buf)

    def _buffer_body(self) -> Optional[Request]:
        """Buffering parsers: gather the pending request's body."""
        body = self._body
        assert body is not None
        while self._state != _BODY_DONE:
            piece = self._body_piece()
            if piece is None:
                if self._state != _BODY_DONE:
                    return None
                break
            body += piece
        request = self._pending
        assert request is not None
        self._pending = None
        self._body = None
        request.body = bytes(body)
        request.trailers = self._trailers
        self._state = _HEAD_STATE
        self._consumed(self._pos)
        if not request.keep_alive:
            self._finish_connection()
        return request

    def _end_of_message(self) -> EndOfMessage:
        request = self._pending
        assert request is not None
        self._pending = None
        event = EndOfMessage(self._trailers)
        self._state = _HEAD_STATE
        self._consumed(self._pos)
        if not request.keep_alive:
            self._finish_connection()
        return event

    def _body_piece(self) -> Optional[bytes]:
        """The next piece of the body in progress; None when more input is
        needed or the body is complete (then the state is _BODY_DONE)."""
        if self._state == _LENGTH_BODY:
            buf = self._buf
            pos = self._pos
            take = min(len(buf) - pos, self._remaining)
            if not take:
                return None
            self.wants_continue = False
            self._pos = pos + take
            self._remaining -= take
            if not self._remaining:
                self._state = _BODY_DONE
            return bytes(buf[pos : pos + take])
        return self._chunked_piece()

    def _chunked_piece(self) -> Optional[bytes]:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos < size:
            self.wants_continue = False
        limits = self._limits
        state = self._state
        piece: Optional[bytes] = None
        while True:
            if state == _CHUNK_DATA:
                take = min(size - pos, self._remaining)
                if not take:
                    break
                piece = bytes(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                state = _CHUNK_END
                # The CRLF after the data is checked now if it is here.
            if state == _CHUNK_END:
                if not buf.startswith(b"\r\n", pos):
                    if buf[pos : pos + 2] in (b"", b"\r"):
                        break
                    raise HttpError(400, "chunk data not followed by CRLF")
                pos += 2
                state = _CHUNK_LINE
                if piece is not None:
                    break
            if state == _CHUNK_LINE:
                line_end = buf.find(b"\r\n", pos, pos + limits.max_chunk_line + 2)
                if line_end < 0:
                    if size - pos > limits.max_chunk_line + 1:
                        raise HttpError(400, "chunk size line too long")
                    if buf.find(b"\n", pos, size) >= 0:
                        raise HttpError(400, "bare LF in chunk size line")
                    break
                chunk_size = _chunk_size(buf[pos:line_end])
                pos = line_end + 2
                if chunk_size:
                    if self._body_size + chunk_size > limits.max_body:
                        raise HttpError(413, f"chunked body exceeds the {limits.max_body}-byte limit")
                    self._body_size += chunk_size
                    self._remaining = chunk_size
                    state = _CHUNK_DATA
                    continue
                state = _TRAILERS
                self._scan = pos
            # state == _TRAILERS
            if buf.startswith(b"\r\n", pos):
                pos += 2
                state = _BODY_DONE
                break
            end = buf.find(b"\r\n\r\n", max(pos, self._scan))
            if end < 0:
                _reject_bare_lf(buf, pos, self._scan)
                self._scan = max(pos, size - 3)
                if size - pos >= limits.max_header_block + 2:
                    raise HttpError(431, f"trailer section larger than {limits.max_header_block} bytes")
                if buf[pos : pos + 1] not in (b"", b"\r") and buf[pos] not in TCHAR:
                    raise HttpError(400, "malformed trailer field")
                break
            # Bytes before size, as the incremental checks above meet them.
            block = buf[pos:end]
            lines = block.decode("latin-1").split("\r\n")
            _check_field_bytes(block, len(lines))
            # Field lines with their CRLFs, as for the header section.
            if end + 2 - pos > limits.max_header_block:
                raise HttpError(431, f"trailer section larger than {limits.max_header_block} bytes")
            trailers, special = _parse_fields(lines, limits)
            for key, _ in special:
                if key in _TRAILER_FORBIDDEN:
                    raise HttpError(400, f"{key} is not allowed in trailers")
            self._trailers = Headers(trailers)
            pos = end + 4
            state = _BODY_DONE
            break
        self._pos = pos
        self._state = state
        return piece

    def _finish_connection(self) -> None:
        self._state = _FINISHED
        self._buf = b""
        self._pos = 0
