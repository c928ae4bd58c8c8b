"""Property tests: RequestParser against h11 as an oracle.

Hypothesis generates valid request streams (several methods and target
forms, header sets, Content-Length and chunked bodies with extensions and
trailers, pipelined sequences, HTTP/1.0 and 1.1) and mutated ones (byte
flips, insertions, deletions, duplicated lines, injected smuggling fields,
LF-only line endings). Each stream is cut at random points and fed to both
parsers. Requests both parsers return must be identical; where one accepts
and the other rejects, the difference must be one that parser.py documents.
The documented differences live in ``stricter_reasons`` (we reject, h11
accepts) and ``looser_reasons`` (we accept, h11 rejects), each with the RFC
reason for it. Two more are handled by the h11 driver itself, because they
change what happens to the rest of the stream:

* HTTP/1.0 with ``Connection: keep-alive``: h11 always closes an HTTP/1.0
  connection; we keep it open as the client asked (RFC 9112 §9.3). The
  driver continues with a fresh h11 connection on the remaining bytes.
* Bytes after a request that closes the connection: h11 raises on them; we
  ignore them (RFC 9112 §9.6 forbids processing them, and an error response
  would corrupt the stream). The driver stops reading there.

Profiles: ``http-ci`` (default; 200 examples, derandomized so CI is
reproducible) and ``http-deep`` (5000 random examples), chosen with the
environment variable PARALLIO_HTTP_PROFILE.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallio.http.parser import HttpError, Limits, RequestParser

_RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "http-ci", max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=_RELAXED
)
settings.register_profile("http-deep", max_examples=5000, deadline=None, database=None, suppress_health_check=_RELAXED)
ORACLE = settings.get_profile(os.environ.get("PARALLIO_HTTP_PROFILE", "http-ci"))

LIMITS = Limits()
MAX_BODY = LIMITS.max_body

Normalized = tuple  # (method, target, version, headers, body, trailers), all bytes


# --- generating valid streams -------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/"
HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-."
VALUE_CHARS = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0x80, 0x100)]
# Fields the generator sets deliberately; random names must not collide.
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer"}

tokens = st.text(alphabet=TCHAR, min_size=1, max_size=10)
field_names = st.one_of(
    st.sampled_from(["Accept", "User-Agent", "X-Request-Id", "Cookie", "Accept-Encoding", "Cache-Control"]),
    tokens,
).filter(lambda name: name.lower() not in RESERVED)
field_values = st.lists(st.text(alphabet=VALUE_CHARS, min_size=1, max_size=8), max_size=4).flatmap(
    lambda words: st.sampled_from([" ", "\t", "  "]).map(lambda gap: gap.join(words))
)
ows = st.sampled_from(["", " ", "\t", " \t "])
hosts = st.builds(
    lambda name, port: name + port,
    st.text(alphabet=HOST_CHARS, min_size=1, max_size=12),
    st.sampled_from(["", ":80", ":8080"]),
)


def cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper()])


@st.composite
def targets(draw: st.DrawFn, method: str) -> str:
    if method == "OPTIONS" and draw(st.booleans()):
        return "*"
    path = "/" + draw(st.text(alphabet=PATH_CHARS, max_size=16))
    if draw(st.booleans()):
        path += "?" + draw(st.text(alphabet=PATH_CHARS + "?", max_size=12))
    if draw(st.integers(0, 5)) == 0:
        return "http://" + draw(hosts) + path
    return path


@st.composite
def field_lines(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(
        name.encode() + b":" + draw(ows).encode() + value.encode("latin-1") + draw(ows).encode() + b"\r\n"
        for name, value in pairs
    )


@st.composite
def chunked_encoding(draw: st.DrawFn, body: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    out = []
    position = 0
    while position < len(body):
        size = draw(st.integers(1, len(body) - position))
        digits = draw(st.sampled_from(["%x", "%X", "%03x"])) % size
        extension = draw(st.sampled_from(["", ";a", ";a=b", ';name="quoted value"', ";x;y=1"]))
        out.append(f"{digits}{extension}\r\n".encode() + body[position : position + size] + b"\r\n")
        position += size
    out.append(draw(st.sampled_from([b"0", b"000", b"0;end"])) + b"\r\n")
    trailers = draw(st.lists(st.tuples(field_names, field_values), max_size=3))
    out.append(draw(field_lines(trailers)) + b"\r\n")
    return b"".join(out), trailers


@st.composite
def requests(draw: st.DrawFn, binary_bodies: bool) -> tuple[bytes, Normalized, bool]:
    """One request: its bytes, what a parser must make of it, keep-alive."""
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]), tokens))
    if method in ("CONNECT",):
        method = "GET"
    target = draw(targets(method))
    pairs: list[tuple[str, str]] = [(n, v) for n, v in draw(st.lists(st.tuples(field_names, field_values), max_size=5))]
    if version == "1.1" or draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(cased("Host")), draw(hosts)))
    connection = draw(st.sampled_from([None, "keep-alive", "close", "Keep-Alive, foo"]))
    if connection is not None:
        pairs.append((draw(cased("Connection")), connection))
    keep_alive = (connection is None and version == "1.1") or (
        connection is not None and "close" not in connection.lower() and (version == "1.1" or "keep-alive" in connection.lower())
    )
    body_bytes = st.binary(max_size=40) if binary_bodies else st.text(alphabet="abcdefxyz", max_size=40).map(str.encode)
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"]))
    body = b""
    trailers: list[tuple[str, str]] = []
    encoded = b""
    if framing == "length":
        body = draw(body_bytes)
        pairs.append((draw(cased("Content-Length")), str(len(body))))
        encoded = body
    elif framing == "chunked":
        body = draw(body_bytes)
        pairs.append((draw(cased("Transfer-Encoding")), draw(st.sampled_from(["chunked", "Chunked"]))))
        encoded, trailers = draw(chunked_encoding(body))
    if framing != "none" and version == "1.1" and draw(st.integers(0, 4)) == 0:
        pairs.append(("Expect", "100-continue"))
    raw = f"{method} {target} HTTP/{version}\r\n".encode() + draw(field_lines(pairs)) + b"\r\n" + encoded
    expected = (
        method.encode(),
        target.encode(),
        version.encode(),
        normalize_fields((n.lower().encode(), v.encode("latin-1")) for n, v in pairs),
        body,
        normalize_fields((n.lower().encode(), v.encode("latin-1")) for n, v in trailers),
    )
    return raw, expected, keep_alive


@st.composite
def streams(draw: st.DrawFn, binary_bodies: bool = True) -> tuple[bytes, list[Normalized]]:
    """Pipelined requests, and what must be parsed from them: everything up
    to and including the first request that closes the connection."""
    parts = draw(st.lists(requests(binary_bodies), min_size=1, max_size=4))
    expected = []
    for _, normalized, keep_alive in parts:
        expected.append(normalized)
        if not keep_alive:
            break
    return b"".join(raw for raw, _, _ in parts), expected


@st.composite
def cut_points(draw: st.DrawFn, data: bytes) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))


# --- mutations ------------------------------------------------------------------------------

INTERESTING_BYTES = [b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b":", b",", b";", b"0", b"\x7f", b"\xff", b"\x0b", b"a"]
SMUGGLING_LINES = [
    b"Content-Length: 0",
    b"Content-Length: 3",
    b"Content-Length: 3, 3",
    b"Content-Length: +3",
    b"Content-Length: 0000000000000000000003",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked ",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: chunked,",
    b"Transfer-Encoding : chunked",
    b" Transfer-Encoding: chunked",
    b"Transfer-Encoding:\tchunked",
    b"Transfer-Encoding:\x0bchunked",
    b"Transfer-Encoding: \"chunked\"",
    b"Host: other.example",
    b"Host: a b",
    b"Expect: 100-continue",
    b"Expect: nothing",
    b"Connection: close",
    b"X-Fold: a\r\n b",
]


@st.composite
def mutated_streams(draw: st.DrawFn, operations: tuple[str, ...]) -> bytes:
    data, _ = draw(streams(binary_bodies=False))
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(operations))
        position = draw(st.integers(0, len(data)))
        if operation == "flip" and data:
            position = min(position, len(data) - 1)
            replacement = draw(st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(min_size=1, max_size=1)))
            data = data[:position] + replacement + data[position + 1 :]
        elif operation == "insert":
            data = data[:position] + draw(st.sampled_from(INTERESTING_BYTES)) + data[position:]
        elif operation == "delete":
            data = data[:position] + data[position + draw(st.integers(1, 4)) :]
        else:
            line_starts = [0] + [m.end() for m in re.finditer(rb"\r\n", data)]
            start = draw(st.sampled_from(line_starts))
            if operation == "duplicate_line":
                end = data.find(b"\r\n", start)
                if end >= 0:
                    data = data[:start] + data[start : end + 2] + data[start:]
            elif operation == "inject_line":
                data = data[:start] + draw(st.sampled_from(SMUGGLING_LINES)) + b"\r\n" + data[start:]
            elif operation == "lf_only":
                crlfs = [m.start() for m in re.finditer(rb"\r\n", data)]
                if crlfs:
                    at = draw(st.sampled_from(crlfs))
                    data = data[:at] + data[at + 1 :]
    return data


# --- running the parsers --------------------------------------------------------------------


def normalize_fields(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """Fields as compared: h11 folds repeated Content-Length into one and
    lowercases Transfer-Encoding, so Content-Length is left out (the body
    comparison covers it) and Transfer-Encoding values are lowercased."""
    out = []
    for name, value in pairs:
        if name == b"content-length":
            continue
        if name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


@dataclass
class Outcome:
    requests: list[Normalized] = field(default_factory=list)
    error: Optional[int] = None  # our status, or 0 for an h11 error
    incomplete: bool = False
    # h11 only: the head of a request whose body never completed.
    partial: Optional[h11.Request] = None
    # h11 only: the raw events of each request, for the deviation checks.
    events: list[tuple[h11.Request, list]] = field(default_factory=list)
    # ours only (whole-stream run): where each request after the first starts.
    offsets: list[int] = field(default_factory=list)


def run_ours(chunks: list[bytes]) -> Outcome:
    outcome = Outcome()
    parser = RequestParser()
    try:
        for piece in chunks:
            parser.feed(piece)
            for request in parser:
                outcome.requests.append(
                    (
                        request.method.encode(),
                        request.target.encode(),
                        b"%d.%d" % request.http_version,
                        normalize_fields((n.encode(), v.encode("latin-1")) for n, v in request.headers),
                        request.body,
                        normalize_fields((n.encode(), v.encode("latin-1")) for n, v in request.trailers),
                    )
                )
                # White-box: fed as one piece, _pos is an offset into the stream.
                outcome.offsets.append(parser._pos)  # noqa: SLF001
    except HttpError as error:
        outcome.error = error.status
        return outcome
    outcome.incomplete = parser.in_progress
    return outcome


def comma_tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",") if t.strip(b" \t")]


def run_h11(chunks: list[bytes]) -> Outcome:
    outcome = Outcome()
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    current: Optional[h11.Request] = None
    body = b""
    try:
        for piece in chunks:
            connection.receive_data(piece)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    break
                if event is h11.PAUSED:
                    # Only a protocol switch (CONNECT, Upgrade) pauses h11
                    # here; the generator makes neither, mutations rarely.
                    return outcome
                if isinstance(event, h11.Request):
                    current, body = event, b""
                    outcome.partial = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    outcome.requests.append(
                        (
                            bytes(current.method),
                            bytes(current.target),
                            bytes(current.http_version),
                            normalize_fields(current.headers),
                            body,
                            normalize_fields(event.headers),
                        )
                    )
                    outcome.events.append((current, list(event.headers)))
                    outcome.partial = None
                    # A 2xx to CONNECT would switch h11 to a tunnel; we
                    # parse on after a CONNECT, as h11 does after a refusal.
                    status = 405 if current.method == b"CONNECT" else 200
                    connection.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
                    connection.send(h11.EndOfMessage())
                    if connection.their_state is h11.DONE:
                        connection.start_next_cycle()
                        continue
                    tokens = comma_tokens([v for n, v in current.headers if n == b"connection"])
                    if current.http_version == b"1.0" and b"keep-alive" in tokens and b"close" not in tokens:
                        rest = connection.trailing_data[0]
                        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
                        if rest:  # b"" would mean EOF to h11
                            connection.receive_data(rest)
                        continue
                    return outcome  # closed: the rest is ignored, as we do
    except h11.RemoteProtocolError:
        outcome.error = 0
        return outcome
    outcome.incomplete = connection.their_state is h11.SEND_BODY or bool(connection.trailing_data[0])
    return outcome


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    # No empty pieces: b"" means EOF to h11.
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# --- documented differences ---------------------------------------------------------------

# RFC 3986 host [":" port], no userinfo: a reg-name (with %HH escapes), an
# IPv4 address, or a bracketed IPv6 literal (checked for shape only).
_AUTHORITY = rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
HOST_RE = re.compile(_AUTHORITY)
ABSOLUTE_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://(?![/?]|$)" + _AUTHORITY + rb"(?:[/?].*)?")
# RFC 9112 §7.1: chunk-size [ chunk-ext ] with chunk-ext as §7.1.1 writes it.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
CHUNK_LINE_RE = re.compile(
    rb"[0-9A-Fa-f]+(?:[\t ]*;[\t ]*" + _TOKEN + rb"(?:[\t ]*=[\t ]*(?:" + _TOKEN
    + rb'|"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*')
REQUEST_LINE_RE = re.compile(rb"(\S+) (\S+) HTTP/(\d)\.(\d)")
# What a request line may still become while its CRLF has not arrived.
PARTIAL_REQUEST_LINE_RE = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]*(?: [\x21-\x7e]*(?: [\x21-\x7e]*)?)?\r?")
H11_REQUEST_LINE_RE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]")
TCHAR_BYTES = TCHAR.encode()
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# A last chunk, whole trailer lines, then a byte no field name starts with.
TRAILER_START_RE = re.compile(
    rb"(?:^|\n)0+[ \t]*(?:;[^\r\n]*)?\r\n(?:[" + re.escape(TCHAR_BYTES) + rb"][^\r\n]*\r\n)*"
    rb"[^" + re.escape(TCHAR_BYTES) + rb"\r]"
)


def target_form_ok(method: bytes, target: bytes) -> bool:
    if target.startswith(b"/"):
        return method != b"CONNECT"
    if target == b"*":
        return method == b"OPTIONS"
    if method == b"CONNECT":
        # authority-form: host ":" port, and the host has no colon of its
        # own unless it is an IP literal in brackets (RFC 3986 §3.2.2).
        host, _, port = target.rpartition(b":")
        return (bool(host) and port.isdigit() and HOST_RE.fullmatch(host) is not None
                and (b":" not in host or host.startswith(b"[")))
    return ABSOLUTE_RE.fullmatch(target) is not None


def stricter_reasons(rest: bytes, head: Optional[h11.Request], trailers: Optional[list]) -> dict[str, int]:
    """Why we may refuse what h11 accepts (or still waits for), with the
    status we answer. ``rest`` starts at the request in question; ``head``
    is h11's parse of its head, if h11 got that far."""
    reasons: dict[str, int] = {}
    if re.search(rb"(?<!\r)\n|\r(?!\n)", rest):
        reasons["bare CR or LF: lines end in CRLF only"] = 400
    if re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", rest):
        # (NUL, VT and FF too: h11 refuses them in fields but not in chunk extensions.)
        reasons["control character: h11 lets most CTLs through, RFC 9110 §5.5 forbids them"] = 400
    if re.search(rb"\n[ \t]", rest):
        reasons["obs-fold: h11 unfolds, we refuse (RFC 9112 §5.2 allows either)"] = 400
    if re.search(rb"(?:^|\n)[0-9A-Fa-f]{17,20}(?:[ \t;\r]|$)", rest):
        reasons["chunk size over 16 hex digits: h11 allows 20"] = 400
    if re.search(rb"(?:^|\n)0*[1-9A-Fa-f][0-9A-Fa-f]{6,}", rest):
        reasons["chunk announcing more than the body limit"] = 413
    start = rest.lstrip(b"\r\n")
    first_line = start.split(b"\n", 1)[0].rstrip(b"\r")
    if start[:1] and start[0] not in TCHAR_BYTES:
        reasons["not a method's first byte: refused at once (h11 waits unless < 0x21)"] = 400
    if TRAILER_START_RE.search(rest):
        reasons["trailer line not starting with a name: refused at once (h11 waits)"] = 400
    if b"\r\n" in start and not H11_REQUEST_LINE_RE.fullmatch(first_line):
        reasons["malformed request line: refused before the head ends"] = 400
    if b"\r\n" not in start and PARTIAL_REQUEST_LINE_RE.fullmatch(first_line) is None:
        reasons["a request line that can no longer become valid (a byte outside SP/VCHAR, "
                "a non-token method byte, a third space): refused before its CRLF"] = 400
    request_line = REQUEST_LINE_RE.fullmatch(first_line)
    if request_line:
        if request_line[3] + b"." + request_line[4] not in (b"1.0", b"1.1"):
            reasons["version other than 1.0/1.1: h11 accepts any d.d"] = 505
        if not target_form_ok(request_line[1], request_line[2]):
            reasons["target form not allowed for the method (RFC 9112 §3.2)"] = 400
        if b"#" in request_line[2]:
            reasons["a fragment in the target: clients never send one (RFC 9112 §3.2)"] = 400
    if head is not None:
        names = [name for name, _ in head.headers]
        values = {name: [v for n, v in head.headers if n == name] for name in names}
        if b"transfer-encoding" in values and b"content-length" in values:
            reasons["Content-Length with Transfer-Encoding: h11 obeys TE, we refuse"] = 400
        if b"transfer-encoding" in values and head.http_version == b"1.0":
            reasons["Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1)"] = 400
        if any(HOST_RE.fullmatch(v) is None for v in values.get(b"host", [])):
            reasons["Host outside RFC 3986 authority characters"] = 400
        if any(t != b"100-continue" for t in comma_tokens(values.get(b"expect", []))):
            reasons["unknown expectation (RFC 9110 §10.1.1 allows 417)"] = 417
        if any(int(v) > MAX_BODY for v in values.get(b"content-length", [])):
            reasons["Content-Length over the body limit"] = 413
    if trailers and any(n in (b"content-length", b"transfer-encoding", b"host") for n, _ in trailers):
        reasons["framing or routing field in trailers (RFC 9110 §6.5.1)"] = 400
    # Size limits (parser.Limits); h11 has only one, far larger.
    lines = rest.split(b"\r\n")
    if any(len(line) > LIMITS.max_request_line for line in lines):
        reasons["a line longer than Limits.max_request_line"] = 414
    if len(rest) > LIMITS.max_header_block or len(lines) > LIMITS.max_headers:
        reasons["header or trailer section over Limits.max_header_block or max_headers"] = 431
    body_lines = rest.partition(b"\r\n\r\n")[2].split(b"\r\n")
    if any(len(line) > LIMITS.max_chunk_line for line in body_lines):
        reasons["chunk line longer than Limits.max_chunk_line"] = 400
    if any(line[:1] and line[0] in HEX_DIGITS and CHUNK_LINE_RE.fullmatch(line) is None
           for line in body_lines):
        reasons["chunk line outside RFC 9112 §7.1.1 (trailing whitespace, a bare ';'): "
                "h11 allows them"] = 400
    return reasons


def looser_reasons(rest: bytes) -> list[str]:
    """Why we may accept (or still wait for) what h11 refuses."""
    reasons = []
    if rest.startswith(b"\r\n") or rest == b"\r":
        reasons.append("empty lines before the request line are skipped (RFC 9112 §2.2)")
    if re.search(rb"(?:^|\n)[0-9A-Fa-f]+[ \t]+;", rest):
        reasons.append("BWS before a chunk extension (RFC 9112 §7.1.1); h11 refuses it")
    head = re.split(rb"\r?\n\r?\n", rest, maxsplit=1)[0]
    encodings = re.findall(rb"(?im)^transfer-encoding:[ \t]*(.*?)[ \t]*\r?$", head)
    if len(encodings) > 1 or any(v.lower() != b"chunked" for v in encodings):
        reasons.append("Transfer-Encoding as a list with empty elements or over several fields (RFC 9110 §5.6.1)")
    if re.search(rb"(?im)^content-length:[^\r\n]*\d{21}", head):
        reasons.append("Content-Length with over 20 digits (leading zeros): h11 caps the digits")
    return reasons


def check(data: bytes, cuts: list[int]) -> tuple[Outcome, Outcome]:
    chunks = pieces(data, cuts)
    whole = run_ours([data])
    ours = run_ours(chunks)
    # However the bytes arrive, our verdict is the same.
    assert (ours.requests, ours.error, ours.incomplete) == (whole.requests, whole.error, whole.incomplete)
    theirs = run_h11(chunks)

    common = min(len(ours.requests), len(theirs.requests))
    assert ours.requests[:common] == theirs.requests[:common]
    if len(ours.requests) == len(theirs.requests):
        if ours.error is None and theirs.error is None and ours.incomplete == theirs.incomplete:
            return ours, theirs
        if ours.error is not None and theirs.error is not None:
            return ours, theirs  # both refuse; h11's status hints are too coarse to compare

    # They part ways at request number `common`.
    rest = data[whole.offsets[common - 1] :] if common else data
    ours_refused_here = ours.error is not None and len(ours.requests) == common
    h11_took_more = len(theirs.requests) > common or theirs.error is None
    if ours_refused_here and h11_took_more:
        event = theirs.events[common] if len(theirs.events) > common else None
        head = event[0] if event else theirs.partial
        reasons = stricter_reasons(rest, head, event[1] if event else None)
        assert ours.error in reasons.values(), (
            f"we refused with {ours.error} what h11 accepts, for no documented reason: {rest[:300]!r} {reasons}"
        )
    else:
        assert looser_reasons(rest), f"we accept what h11 refuses, for no documented reason: {rest[:300]!r}"
    return ours, theirs


# --- the properties -------------------------------------------------------------------------


@ORACLE
@given(st.data())
def test_valid_streams_parse_identically(data: st.DataObject) -> None:
    stream, expected = data.draw(streams(binary_bodies=True))
    cuts = data.draw(cut_points(stream))
    ours, theirs = check(stream, cuts)
    assert ours.error is None and theirs.error is None
    assert not ours.incomplete and not theirs.incomplete
    assert ours.requests == theirs.requests == expected


@ORACLE
@given(st.data())
def test_mutated_streams_differ_only_as_documented(data: st.DataObject) -> None:
    stream = data.draw(mutated_streams(("flip", "insert", "delete", "duplicate_line", "lf_only")))
    check(stream, data.draw(cut_points(stream)))


@ORACLE
@given(st.data())
def test_smuggling_variants_differ_only_as_documented(data: st.DataObject) -> None:
    stream = data.draw(mutated_streams(("inject_line", "duplicate_line", "lf_only")))
    check(stream, data.draw(cut_points(stream)))


# --- the documented differences, one concrete example each --------------------------------


def verdicts(data: bytes) -> tuple[Optional[int], Optional[int], int, int]:
    ours, theirs = run_ours([data]), run_h11([data])
    return ours.error, theirs.error, len(ours.requests), len(theirs.requests)


GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_difference_bare_lf() -> None:
    assert verdicts(b"GET / HTTP/1.1\nHost: h\n\n") == (400, None, 0, 1)


def test_difference_leading_crlf() -> None:
    assert verdicts(b"\r\n" + GET) == (None, 0, 1, 0)


def test_difference_control_characters() -> None:
    assert verdicts(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n") == (400, None, 0, 1)


def test_difference_obs_fold() -> None:
    assert verdicts(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n") == (400, None, 0, 1)


def test_difference_versions() -> None:
    assert verdicts(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n") == (505, None, 0, 1)


def test_difference_cl_with_te() -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert verdicts(data) == (400, None, 0, 1)


def test_difference_http10_keep_alive() -> None:
    data = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET
    assert len(run_ours([data]).requests) == 2
    assert len(run_h11([data]).requests) == 2  # only thanks to the driver's fresh connection


def test_difference_data_after_close() -> None:
    data = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\ngarbage"
    ours = run_ours([data])
    assert ours.error is None and len(ours.requests) == 1
    client = h11.Connection(h11.SERVER)
    client.receive_data(data)
    assert isinstance(client.next_event(), h11.Request)
    assert isinstance(client.next_event(), h11.EndOfMessage)
    client.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    client.send(h11.EndOfMessage())
    try:
        client.next_event()
    except h11.RemoteProtocolError:
        pass  # h11 refuses the bytes we ignore
    else:
        raise AssertionError("h11 accepted data after Connection: close")


def test_difference_chunk_extension_whitespace() -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1 ;x\r\na\r\n0\r\n\r\n"
    assert verdicts(data) == (None, 0, 1, 0)


def test_difference_unknown_expectation() -> None:
    assert verdicts(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: x\r\n\r\n") == (417, None, 0, 1)
