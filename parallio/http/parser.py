"""Sans-I/O HTTP/1.1 request parser.

Feed it bytes as they arrive; pull complete requests out::

    parser = RequestParser()
    parser.feed(data)
    for request in parser:          # or: parser.next_request() until None
        ...
    if parser.wants_continue:       # headers of an Expect: 100-continue
        send(CONTINUE_RESPONSE)     # request are in, its body is not
        parser.continue_sent()

Requests may be pipelined and split at any byte. Bodies are buffered whole.
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
  only). Anything else is 400.
* Header names are tokens; a space or tab before the colon, obs-fold
  (a line starting with space/tab) and control characters other than HTAB
  in values (NUL, DEL, ...) are all 400. Values lose surrounding SP/HTAB and
  are decoded as latin-1 (obs-text survives byte for byte).
* HTTP/1.1 needs exactly one Host; more than one Host is 400 in any version,
  and so is a Host value outside the RFC 3986 authority characters.
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
* Chunk lines: 1 to 16 hex digits (a 64-bit size), then optional SP/HTAB and
  optional ``;extensions`` (ignored; no control characters). Garbage, a
  longer size, a missing CRLF after the data: 400.
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
first byte that cannot start a method (a TLS handshake, binary), a complete
but malformed request line, a bare LF.

Sizes are bounded by :class:`Limits`: request line (414), header section or
header count (431; trailers count separately against the same limits), body
(413: Content-Length at once, chunked as soon as the running total of
announced chunk sizes passes it), chunk line (400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Union
from urllib.parse import unquote

__all__ = ["HttpError", "Limits", "Headers", "Request", "RequestParser"]


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


class Headers:
    """Header fields in arrival order, names lowercased, values as str.

    Read-only: requests with byte-identical heads share one instance.

    Lookups are case-insensitive linear scans: requests carry a handful of
    fields, and building a dict per request would cost more than it saves.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of field ``name``, or ``default``."""
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of field ``name``, in arrival order."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        for key, _ in self._items:
            if key == name:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


_NO_HEADERS = Headers([])


class Request:
    """One complete request.

    ``target`` is the request-target exactly as sent. ``raw_path`` and
    ``query`` split it at the first ``?`` (for absolute-form, after the
    authority; an empty path becomes ``/``); ``path`` is ``raw_path``
    percent-decoded as UTF-8 (invalid sequences become U+FFFD). For ``*``
    both paths are ``*``; for CONNECT's authority-form they are empty.
    """

    __slots__ = (
        "method",
        "target",
        "raw_path",
        "path",
        "query",
        "http_version",
        "headers",
        "body",
        "trailers",
        "keep_alive",
        "expect_continue",
    )

    def __init__(
        self,
        method: str,
        target: str,
        raw_path: str,
        query: str,
        http_version: tuple[int, int],
        headers: Headers,
        keep_alive: bool,
        expect_continue: bool,
        body: bytes = b"",
        trailers: Headers = _NO_HEADERS,
    ) -> None:
        self.method = method
        self.target = target
        self.raw_path = raw_path
        self.path = unquote(raw_path, errors="replace") if "%" in raw_path else raw_path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body = body
        self.trailers = trailers

    def __repr__(self) -> str:
        major, minor = self.http_version
        return (
            f"<Request {self.method} {self.target} HTTP/{major}.{minor} "
            f"headers={len(self.headers)} body={len(self.body)}B "
            f"keep_alive={self.keep_alive}>"
        )


Buffer = Union[bytes, bytearray]

# --- character classes -------------------------------------------------------

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Everything a head may hold apart from CR and LF: HTAB, SP, VCHAR, obs-text.
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_HEXDIG = b"0123456789abcdefABCDEF"
# RFC 3986 authority: unreserved, pct-encoded, sub-delims, ":", IP-literal brackets.
_HOST_BYTES = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"
)
_SCHEME_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-."

# Validated-name caches: a hit both proves the name is a token and gives its
# canonical form, so the common case costs one dict lookup. Bounded so that a
# client inventing names cannot grow them without limit.
_CACHE_MAX = 1024
_METHODS: dict[str, str] = {
    m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}
_FIELD_NAMES: dict[str, str] = {}

# Fields that decide framing, routing or connection handling.
_SPECIAL = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))
_TRAILER_FORBIDDEN = frozenset(("host", "content-length", "transfer-encoding"))


def _is_token(text: str) -> bool:
    return bool(text) and text.isascii() and not text.encode("ascii").translate(None, _TCHAR)


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


def _check_host(host: str) -> None:
    if not (host.isascii() and not host.encode("ascii").translate(None, _HOST_BYTES)):
        raise HttpError(400, f"invalid Host {host[:64]!r}")


def _split_absolute_form(target: str) -> tuple[str, str]:
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
    _check_host(rest[:cut])
    raw_path, _, query = rest[cut:].partition("?")
    return raw_path or "/", query


def _chunk_size(line: Buffer) -> int:
    digits = len(line) - len(line.lstrip(_HEXDIG))
    if digits == 0:
        raise HttpError(400, f"invalid chunk size line {bytes(line[:32])!r}")
    if digits > 16:
        raise HttpError(400, "chunk size does not fit in 64 bits")
    rest = line[digits:].lstrip(b" \t")
    if rest and (rest[:1] != b";" or rest.translate(None, _FIELD_BYTES)):
        raise HttpError(400, f"invalid chunk extension {bytes(rest[:32])!r}")
    return int(line[:digits], 16)


def _check_authority_form(target: str) -> None:
    host, colon, port = target.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()):
        raise HttpError(400, "CONNECT target must be host:port")
    _check_host(host)


def _parse_request_line(line: str) -> tuple[str, str, str, str, tuple[int, int]]:
    parts = line.split(" ")
    if len(parts) != 3 or not line.isascii() or "\t" in line:
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
        raw_path, query = "", ""
    else:
        raw_path, query = _split_absolute_form(target)
    return method, target, raw_path, query, version


_CHUNKED = -1  # body length meaning "chunked"
# Heads at most this long are remembered per parser: pipelining clients
# repeat their head byte for byte, and a hit skips all of _parse_head.
_HEAD_CACHE_MAX = 2048

_HeadFields = tuple[str, str, str, str, tuple[int, int], Headers, bool, bool]


def _parse_head(head: Buffer, limits: Limits) -> tuple[_HeadFields, int]:
    """Validate a request head (request line and field lines, without the
    final blank line); return Request's constructor arguments and the body
    length (``_CHUNKED`` for chunked). Depends on nothing but its inputs."""
    lines = head.decode("latin-1").split("\r\n")
    line_length = len(lines[0])  # latin-1: one character per byte
    if line_length > limits.max_request_line:
        raise HttpError(414, f"request line longer than {limits.max_request_line} bytes")
    # The header section: each field line with its CRLF.
    if len(head) - line_length > limits.max_header_block:
        raise HttpError(431, f"header section larger than {limits.max_header_block} bytes")
    if len(head.translate(None, _FIELD_BYTES)) != 2 * (len(lines) - 1):
        raise _head_bytes_error(head)
    method, target, raw_path, query, version = _parse_request_line(lines[0])
    items, special = _parse_fields(lines[1:], limits)

    hosts = 0
    lengths: Optional[list[str]] = None
    codings: Optional[list[str]] = None
    connection: Optional[list[str]] = None
    expect: Optional[list[str]] = None
    for key, value in special:
        if key == "host":
            hosts += 1
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
    fields = (method, target, raw_path, query, version, Headers(items), keep_alive, expect_continue)
    return fields, body_length


# --- the parser ---------------------------------------------------------------

# Parser states.
_HEAD = 0  # between requests, or inside a request head
_LENGTH_BODY = 1  # reading a Content-Length body
_CHUNK_LINE = 2  # expecting a chunk-size line
_CHUNK_DATA = 3  # inside chunk data
_CHUNK_END = 4  # expecting the CRLF after chunk data
_TRAILERS = 5  # expecting the trailer section
_FINISHED = 6  # a non-keep-alive request was delivered; ignore the rest
_DEAD = 7  # an HttpError was raised


class RequestParser:
    """Incremental HTTP/1.1 request parser; see the module docstring."""

    __slots__ = (
        "_limits",
        "_buf",
        "_pos",
        "_scan",
        "_line_checked",
        "_state",
        "_error",
        "_pending",
        "_body",
        "_remaining",
        "_continue",
        "_last_head",
        "_last_parsed",
    )

    def __init__(self, limits: Optional[Limits] = None) -> None:
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
        # Whether the (complete) request line of the head in progress was
        # validated already, so a slow head is rejected early but only once.
        self._line_checked = False
        self._state = _HEAD
        self._error: Optional[HttpError] = None
        self._pending: Optional[Request] = None  # head parsed, body in progress
        self._body = bytearray()
        self._remaining = 0  # body or chunk bytes still to read
        self._continue = False
        self._last_head: Optional[Buffer] = None
        self._last_parsed: tuple[_HeadFields, int] = ((), 0)  # type: ignore[assignment]

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
            return
        if type(buf) is bytes:
            buf = bytearray(memoryview(buf)[pos:])
        else:
            del buf[:pos]  # O(1): CPython moves the bytearray's start
        buf += data
        self._buf = buf
        self._pos = 0
        self._scan = max(0, self._scan - pos)

    def next_request(self) -> Optional[Request]:
        """The next complete request, or None until more data is fed."""
        if self._error is not None:
            raise self._error
        try:
            if self._state == _HEAD:
                return self._read_head()
            if self._state == _FINISHED:
                return None
            if self._state == _LENGTH_BODY:
                return self._read_length_body()
            return self._read_chunked()
        except HttpError as error:
            self._error = error
            self._state = _DEAD
            self._pending = None
            raise

    def __iter__(self) -> Iterator[Request]:
        """Every request that is complete now."""
        while (request := self.next_request()) is not None:
            yield request

    @property
    def wants_continue(self) -> bool:
        """True while a request sent ``Expect: 100-continue``, its head is
        complete, no byte of its body has been consumed yet and
        :meth:`continue_sent` was not called: the server should send
        ``HTTP/1.1 100 Continue`` (or a final error response) now."""
        return self._continue

    def continue_sent(self) -> None:
        """Record that the 100 Continue response went out."""
        self._continue = False

    @property
    def finished(self) -> bool:
        """True after a request with ``keep_alive`` False was returned."""
        return self._state == _FINISHED

    @property
    def in_progress(self) -> bool:
        """True if part of a request has been received (a server closing
        an idle connection would answer 408 only in this case)."""
        if self._state == _HEAD:
            buf = self._buf
            pos = self._pos
            while buf.startswith(b"\r\n", pos):
                pos += 2
            return pos < len(buf)
        return self._state not in (_FINISHED, _DEAD)

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
        if self._state not in (_HEAD, _FINISHED) or self._line_checked:
            raise RuntimeError("detach() in the middle of a request")
        rest = bytes(self._buf[self._pos :])
        self._buf = b""
        self._pos = 0
        self._state = _FINISHED
        return rest

    # -- head ---------------------------------------------------------------

    def _read_head(self) -> Optional[Request]:
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\r\n\r\n", self._scan if self._scan > pos else pos)
        if end < 0:
            self._incomplete_head(buf, pos)
            return None
        head = buf[pos:end]
        if head == self._last_head:
            fields, body_length = self._last_parsed
        else:
            if buf.startswith(b"\r\n", pos):
                # RFC 9112 §2.2: ignore empty lines before the request line
                # (some clients send a stray CRLF after a POST body).
                while buf.startswith(b"\r\n", pos):
                    pos += 2
                self._pos = pos
                return self._read_head()
            fields, body_length = _parse_head(head, self._limits)
            if len(head) <= _HEAD_CACHE_MAX:
                self._last_head = head
                self._last_parsed = (fields, body_length)
        request = Request(*fields)
        if self._line_checked:
            self._line_checked = False
        pos = end + 4
        if body_length:
            if body_length < 0:
                self._pos = pos
                self._begin_body(request, _CHUNK_LINE, 0)
                return self._read_chunked()
            if len(buf) - pos < body_length:
                self._pos = pos
                self._begin_body(request, _LENGTH_BODY, body_length)
                return self._read_length_body()
            # Whole body present: the common case, no copy into a bytearray.
            request.body = bytes(buf[pos : pos + body_length])
            pos += body_length
        self._pos = self._scan = pos
        if not request.keep_alive:
            self._finish_connection()
        return request

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
            # h11's "obviously invalid" test: a request line starts with a
            # token character. Catches TLS handshakes and binary at once.
            if buf[pos] not in _TCHAR and buf[pos:] != b"\r":
                raise HttpError(400, "request does not start with a method")
            return
        if line_end - pos > limits.max_request_line:
            raise HttpError(414, f"request line longer than {limits.max_request_line} bytes")
        if size - (line_end + 2) >= limits.max_header_block + 2:
            raise HttpError(431, f"header section larger than {limits.max_header_block} bytes")
        if not self._line_checked:
            line = buf[pos:line_end]
            _check_field_bytes(line, 1)
            _parse_request_line(line.decode("latin-1"))
            self._line_checked = True

    # -- bodies ---------------------------------------------------------------

    def _begin_body(self, request: Request, state: int, remaining: int) -> None:
        self._pending = request
        self._state = state
        self._remaining = remaining
        self._body = bytearray()
        # Only worth a 100 Continue if the client has sent nothing of the
        # body yet; it may have started without waiting (RFC 9110 §10.1.1).
        self._continue = request.expect_continue and self._pos >= len(self._buf)

    def _read_length_body(self) -> Optional[Request]:
        buf = self._buf
        pos = self._pos
        take = min(len(buf) - pos, self._remaining)
        if take:
            self._continue = False
            self._body += buf[pos : pos + take]
            self._pos = pos + take
            self._remaining -= take
        if self._remaining:
            return None
        return self._finish_body()

    def _read_chunked(self) -> Optional[Request]:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos < size:
            self._continue = False
        limits = self._limits
        body = self._body
        state = self._state
        while True:
            if state == _CHUNK_DATA:
                take = min(size - pos, self._remaining)
                body += buf[pos : pos + take]
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                state = _CHUNK_END
            if state == _CHUNK_END:
                if not buf.startswith(b"\r\n", pos):
                    if buf[pos : pos + 2] in (b"", b"\r"):
                        break
                    raise HttpError(400, "chunk data not followed by CRLF")
                pos += 2
                state = _CHUNK_LINE
            if state == _CHUNK_LINE:
                line_end = buf.find(b"\r\n", pos, pos + limits.max_chunk_line + 2)
                if line_end < 0:
                    if size - pos > limits.max_chunk_line + 1:
                        raise HttpError(400, "chunk size line too long")
                    break
                chunk_size = _chunk_size(buf[pos:line_end])
                pos = line_end + 2
                if chunk_size:
                    if len(body) + chunk_size > limits.max_body:
                        raise HttpError(413, f"chunked body exceeds the {limits.max_body}-byte limit")
                    self._remaining = chunk_size
                    state = _CHUNK_DATA
                    continue
                state = _TRAILERS
                self._scan = pos
            # state == _TRAILERS
            if buf.startswith(b"\r\n", pos):
                self._pos = pos + 2
                return self._finish_body()
            end = buf.find(b"\r\n\r\n", max(pos, self._scan))
            if end < 0:
                _reject_bare_lf(buf, pos, self._scan)
                self._scan = max(pos, size - 3)
                if size - pos >= limits.max_header_block + 2:
                    raise HttpError(431, f"trailer section larger than {limits.max_header_block} bytes")
                if buf[pos : pos + 1] not in (b"", b"\r") and buf[pos] not in _TCHAR:
                    raise HttpError(400, "malformed trailer field")
                break
            if end - pos > limits.max_header_block:
                raise HttpError(431, f"trailer section larger than {limits.max_header_block} bytes")
            block = buf[pos:end]
            lines = block.decode("latin-1").split("\r\n")
            _check_field_bytes(block, len(lines))
            trailers, special = _parse_fields(lines, limits)
            for key, _ in special:
                if key in _TRAILER_FORBIDDEN:
                    raise HttpError(400, f"{key} is not allowed in trailers")
            assert self._pending is not None
            self._pending.trailers = Headers(trailers)
            self._pos = end + 4
            return self._finish_body()
        self._pos = pos
        self._state = state
        return None

    def _finish_body(self) -> Request:
        request = self._pending
        assert request is not None
        self._pending = None
        self._continue = False
        if self._body:
            request.body = bytes(self._body)
            self._body = bytearray()
        self._state = _HEAD
        self._scan = self._pos
        if not request.keep_alive:
            self._finish_connection()
        return request

    def _finish_connection(self) -> None:
        self._state = _FINISHED
        self._buf = b""
        self._pos = 0
