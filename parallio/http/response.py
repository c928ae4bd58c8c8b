"""Sans-I/O HTTP/1.1 response writer.

Everything here returns ``bytes`` ready to send. The hot path is built from
prepared pieces: status lines are rendered once per status, the ``Date``
header once per second, and headers that never change can be validated and
rendered once with :func:`prepare_headers`.

Header names and values are validated on every path that takes them from
the caller (names must be tokens; values may not hold CR, LF, NUL or other
control characters except HTAB), so a value taken from a request can never
split the response. Violations are programming errors: ``ValueError``.

The status line always says HTTP/1.1 (RFC 9110 §2.5: a server sends the
highest minor version it supports); ``request_version`` only decides how
keep-alive is signalled: an HTTP/1.0 client is told ``Connection:
keep-alive`` explicitly, and chunked encoding is refused for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable, Union

from .._httpdate import date_line as _date_line
from .._httpdate import http_date
from .parser import TCHAR

if TYPE_CHECKING:
    from .parser import Request

__all__ = [
    "REASONS",
    "CONTINUE_RESPONSE",
    "LAST_CHUNK",
    "PreparedHeaders",
    "HeaderPairs",
    "http_date",
    "status_line",
    "check_header_name",
    "check_header_value",
    "prepare_headers",
    "render_head",
    "simple_response",
    "chunk",
    "chunk_header",
    "last_chunk",
    "NO_CONTENT",
    "SERVER_HEADER",
    "server_headers",
    "TEXT",
    "HTML",
    "JSON",
    "render_result",
]

REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    511: "Network Authentication Required",
}

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

HeaderPairs = Iterable[tuple[Union[str, bytes], Union[str, bytes]]]

_STATUS_LINES: dict[int, bytes] = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode("ascii") for code, reason in REASONS.items()
}
#: RFC 9110 §6.4.1, §8.6: these never carry content or Content-Length.
NO_CONTENT = frozenset((*range(100, 200), 204, 304))

_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; unknown codes get an empty reason."""
    line = _STATUS_LINES.get(status)
    if line is not None:
        return line
    if type(status) is not int or not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status!r}")
    return b"HTTP/1.1 %d \r\n" % status


# --- header validation -----------------------------------------------------------


def check_header_name(name: Union[str, bytes]) -> bytes:
    """``name`` as bytes if it is a token; else ValueError."""
    raw = name.encode("latin-1", "replace") if isinstance(name, str) else name
    if not raw or raw.translate(None, TCHAR):
        raise ValueError(f"invalid header name {name!r}")
    return raw


def check_header_value(value: Union[str, bytes]) -> bytes:
    """``value`` as bytes (str is encoded as latin-1) if it holds no CR, LF,
    NUL or other control character except HTAB, and no surrounding
    whitespace; else ValueError. This is what prevents response splitting."""
    if isinstance(value, str):
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header value {value!r} is not latin-1") from None
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise ValueError(f"header value {value!r} is neither str nor bytes")
    if raw.translate(None, _VALUE_BYTES):
        raise ValueError(f"header value {value!r} contains CR, LF or a control character")
    if raw[:1] in (b" ", b"\t") or raw[-1:] in (b" ", b"\t"):
        raise ValueError(f"header value {value!r} has surrounding whitespace")
    return raw


class PreparedHeaders(bytes):
    """Header lines already validated and rendered (``Name: value\\r\\n``...).

    Made by :func:`prepare_headers`; :func:`render_head` and
    :func:`simple_response` take them without checking them again.
    """

    __slots__ = ()


# Validated names by the object the caller passed (names repeat endlessly).
_NAMES: dict[Union[str, bytes], bytes] = {}
_NAMES_MAX = 512


def _name_bytes(name: Union[str, bytes]) -> bytes:
    raw = check_header_name(name)
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = raw
    return raw


def _render_pairs(headers: HeaderPairs) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    cached_name = _NAMES.get
    for name, value in headers:
        append(cached_name(name) or _name_bytes(name))
        append(b": ")
        # Fast path: printable text has no control characters at all (HTAB
        # and some obs-text are not "printable" and take the full check).
        if type(value) is str and value.isprintable() and value.isascii() and value[:1] != " " and value[-1:] != " ":
            append(value.encode("ascii"))
        else:
            append(check_header_value(value))
        append(b"\r\n")
    return b"".join(parts)


def prepare_headers(headers: HeaderPairs) -> PreparedHeaders:
    """Validate and render ``headers`` once, for reuse on every response."""
    return PreparedHeaders(_render_pairs(headers))


def _header_bytes(headers: Union[PreparedHeaders, HeaderPairs]) -> bytes:
    if type(headers) is PreparedHeaders:
        return headers
    if isinstance(headers, (bytes, bytearray, str)):
        raise TypeError("pass header pairs, or bytes made by prepare_headers()")
    return _render_pairs(headers)


# --- heads and whole responses ---------------------------------------------------


def render_head(
    status: int,
    headers: Union[PreparedHeaders, HeaderPairs] = (),
    *,
    content_length: Union[int, None] = None,
    chunked: bool = False,
    keep_alive: bool = True,
    request_version: tuple[int, int] = (1, 1),
    date: bool = True,
) -> bytes:
    """A response head: status line, ``Date`` (unless ``date`` is False),
    ``headers``, then the framing and connection fields this function owns.

    ``content_length`` adds ``Content-Length``; it is also how a HEAD
    response states the length of the body it does not send. ``chunked``
    adds ``Transfer-Encoding: chunked`` (send :func:`chunk` pieces and
    :data:`LAST_CHUNK` after). ``keep_alive`` False adds ``Connection:
    close``; True adds ``Connection: keep-alive`` for an HTTP/1.0 request.
    Do not pass Content-Length, Transfer-Encoding, Connection or Date in
    ``headers``.
    """
    parts = [_STATUS_LINES.get(status) or status_line(status)]
    if date:
        parts.append(_date_line())
    if headers:
        parts.append(headers if type(headers) is PreparedHeaders else _header_bytes(headers))
    if content_length is not None or chunked:
        parts.append(_framing(status, content_length, chunked, request_version))
    if not keep_alive:
        parts.append(_CLOSE)
    elif request_version == (1, 0):
        parts.append(_KEEP_ALIVE)
    parts.append(b"\r\n")
    return b"".join(parts)


def _framing(
    status: int, content_length: Union[int, None], chunked: bool, request_version: tuple[int, int]
) -> bytes:
    if status in NO_CONTENT:
        raise ValueError(f"a {status} response has no content to frame")
    if chunked:
        if content_length is not None:
            raise ValueError("chunked and content_length are exclusive")
        if request_version < (1, 1):
            raise ValueError("an HTTP/1.0 client cannot receive chunked encoding")
        return _CHUNKED
    if type(content_length) is not int or content_length < 0:
        raise ValueError(f"invalid content_length {content_length!r}")
    return b"Content-Length: %d\r\n" % content_length


# Content-Type lines by the value the caller passed; bounded, because the
# values are the application's and could in principle vary without end.
_CONTENT_TYPE_LINES: dict[Union[str, bytes], bytes] = {}
_CONTENT_TYPE_CACHE_MAX = 256


def _content_type_line(content_type: Union[str, bytes]) -> bytes:
    line = b"Content-Type: " + check_header_value(content_type) + b"\r\n"
    if len(_CONTENT_TYPE_LINES) < _CONTENT_TYPE_CACHE_MAX:
        _CONTENT_TYPE_LINES[content_type] = line
    return line


def simple_response(
    status: int,
    body: bytes = b"",
    content_type: Union[str, bytes, None] = b"text/plain; charset=utf-8",
    keep_alive: bool = True,
    extra_headers: Union[PreparedHeaders, HeaderPairs] = (),
    *,
    request_version: tuple[int, int] = (1, 1),
    head_only: bool = False,
) -> bytes:
    """A complete response with a fixed body: status line, Date,
    Content-Type, ``extra_headers``, Content-Length, connection field, body.

    ``head_only`` (for HEAD requests) keeps the Content-Length of ``body``
    but leaves the body out. 1xx, 204 and 304 responses get neither
    Content-Type nor Content-Length, and must have an empty body.
    """
    if status in NO_CONTENT:
        if body:
            raise ValueError(f"a {status} response cannot have a body")
        return render_head(
            status, extra_headers, keep_alive=keep_alive, request_version=request_version
        )
    parts = [_STATUS_LINES.get(status) or status_line(status), _date_line()]
    if content_type is not None:
        parts.append(_CONTENT_TYPE_LINES.get(content_type) or _content_type_line(content_type))
    if extra_headers:
        parts.append(
            extra_headers if type(extra_headers) is PreparedHeaders else _header_bytes(extra_headers)
        )
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(_CLOSE)
    elif request_version == (1, 0):
        parts.append(_KEEP_ALIVE)
    if head_only:
        parts.append(b"\r\n")
    else:
        parts.append(b"\r\n")
        parts.append(body)
    return b"".join(parts)


# --- chunked bodies --------------------------------------------------------------


def chunk_header(size: int) -> bytes:
    """The size line that precedes ``size`` bytes of chunk data; for a
    gather-send of (header, data, b"\\r\\n") without copying the data."""
    if size <= 0:
        raise ValueError("a chunk must hold at least one byte (size 0 ends the body)")
    return b"%x\r\n" % size


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk. Empty data gives ``b""``: an empty chunk would
    end the body."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Union[PreparedHeaders, HeaderPairs] = ()) -> bytes:
    """The end of a chunked body, with optional trailer fields."""
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + _header_bytes(trailers) + b"\r\n"


# --- handler results -------------------------------------------------------------

#: The Content-Types of handler results: bytes, str and anything else.
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
#: The Server header every parallio response carries.
SERVER_HEADER = prepare_headers([("Server", "parallio")])


def server_headers(headers: HeaderPairs) -> PreparedHeaders:
    """The Server header and ``headers``, validated and rendered."""
    return PreparedHeaders(SERVER_HEADER + prepare_headers(headers))

# The common answer (200, HTTP/1.1, kept alive) from one prepared prefix per
# content type and one format operation: the per-request cost of every
# handler that returns its body.
_OK_PREFIX = {content_type: b"HTTP/1.1 200 OK\r\nServer: parallio\r\nContent-Type: "
              + content_type + b"\r\n" for content_type in (TEXT, HTML, JSON)}
_OK_FORMAT = b"%sDate: %s\r\nContent-Length: %d\r\n\r\n%s"


def render_result(result: Any, request: "Request") -> bytes:
    """The 200 response to ``request`` for what a handler returned: ``bytes``
    (or another buffer) is ``text/plain``, ``str`` is ``text/html`` (UTF-8),
    anything else is serialized as JSON. HEAD gets the head alone."""
    cls = result.__class__
    if cls is bytes:
        body, content_type = result, TEXT
    elif cls is str:
        body, content_type = result.encode(), HTML
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body, content_type = bytes(result), TEXT
    else:
        body, content_type = json.dumps(result).encode(), JSON
    if request.keep_alive and request.http_version == (1, 1) and request.method != "HEAD":
        return _OK_FORMAT % (_OK_PREFIX[content_type], http_date(), len(body), body)
    return simple_response(200, body, content_type, request.keep_alive, SERVER_HEADER,
                           request_version=request.http_version,
                           head_only=request.method == "HEAD")

