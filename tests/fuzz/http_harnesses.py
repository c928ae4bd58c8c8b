"""Fuzz harnesses for the HTTP layer: everything a client's bytes reach.

Each harness states its input format and its invariants. The request parser
and chunked decoder harnesses' inputs begin with a flags byte and up to seven
cut gaps (see :func:`_stream_input`), so that the fuzzer also explores how
the bytes arrive.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote_to_bytes

from parallio.http.parser import Headers, HttpError, Limits, Request, RequestParser
from parallio.http.response import (REASONS, check_header_name, check_header_value, last_chunk,
                                    prepare_headers, render_head, simple_response)
from parallio.http.static import MAX_RANGES, StaticFiles, parse_byte_ranges

from ..http import test_parser_h11_oracle as h11_oracle
from .harness import FuzzInput, harness

#: Every status RequestParser documents for a refusal (its module docstring).
PARSER_STATUSES = frozenset((400, 413, 414, 417, 431, 501, 505))

#: Small limits, so that inputs of a few KB reach every limit.
SMALL_LIMITS = Limits(max_request_line=64, max_header_block=256, max_headers=8, max_body=512,
                      max_chunk_line=32)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_TEXT = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value as RFC 9110 §5.5 allows it once OWS is stripped (obs-text included).
_FIELD_VALUE_TEXT = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[\t \x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
_TARGET_TEXT = re.compile(r"[\x21-\x7e]+")

REFUSAL_CORPUS = Path(__file__).parent.parent / "http" / "corpus"


# --- byte streams -------------------------------------------------------------------

# Flags byte of a stream input.
_CUT_COUNT = 0x07  # number of cut gaps that follow
_BYTE_BY_BYTE = 0x08  # also feed the stream one byte at a time
_SMALL_LIMITS = 0x10  # SMALL_LIMITS instead of the defaults


def _stream_input(fuzz: FuzzInput) -> tuple[int, bytes, list[list[bytes]], Limits]:
    """(flags, stream, other ways to cut the stream, limits).

    Format: a flags byte; as many gap bytes as its low three bits say (each
    cut lies gap + 1 bytes after the previous one); the stream.
    """
    flags = fuzz.byte()
    gaps = fuzz.take(flags & _CUT_COUNT)
    stream = fuzz.rest()
    cuts, position = [], 0
    for gap in gaps:
        position += gap + 1
        if position < len(stream):
            cuts.append(position)
    splits = []
    if cuts:
        bounds = [0, *cuts, len(stream)]
        splits.append([stream[a:b] for a, b in zip(bounds, bounds[1:])])
    if flags & _BYTE_BY_BYTE and len(stream) > 1:
        splits.append([stream[i:i + 1] for i in range(len(stream))])
    return flags, stream, splits, SMALL_LIMITS if flags & _SMALL_LIMITS else Limits()


def _cut_positions(pieces: list[bytes]) -> list[int]:
    positions, total = [], 0
    for piece in pieces[:-1]:
        total += len(piece)
        positions.append(total)
    return positions


@dataclass(frozen=True)
class Parsed:
    """What a parser made of a stream."""
    requests: tuple[tuple, ...]
    status: Optional[int]  # the HttpError's, or None
    in_progress: bool


def _normalized(request: Request) -> tuple:
    return (request.method, request.target, request.raw_path, request.query, request.path,
            request.http_version, tuple(request.headers), request.body, tuple(request.trailers),
            request.keep_alive, request.expect_continue)


def _tokens(values: list[str]) -> list[str]:
    return [element.strip(" \t").lower() for value in values for element in value.split(",")
            if element.strip(" \t")]


def check_request(request: Request, limits: Limits) -> None:
    """What every request the parser returns must satisfy."""
    assert _TOKEN_TEXT.fullmatch(request.method), request.method
    assert _TARGET_TEXT.fullmatch(request.target), request.target
    assert request.http_version in ((1, 0), (1, 1)), request.http_version
    if request.target.startswith("/"):
        assert request.target.startswith(request.raw_path) and "?" not in request.raw_path
    elif request.target == "*":
        assert request.raw_path == "*" and request.method == "OPTIONS"
    elif request.method != "CONNECT":
        assert "://" in request.target and request.raw_path.startswith("/"), request.target
    for fields in (request.headers, request.trailers):
        for name, value in fields:
            assert _TOKEN_TEXT.fullmatch(name) and name == name.lower(), name
            assert _FIELD_VALUE_TEXT.fullmatch(value), value
    headers = request.headers
    hosts = headers.get_all("host")
    assert len(hosts) == 1 if request.http_version == (1, 1) else len(hosts) <= 1, hosts
    lengths = headers.get_all("content-length")
    assert len(request.body) <= limits.max_body
    if "transfer-encoding" in headers:
        assert not lengths and request.http_version == (1, 1)
        assert _tokens(headers.get_all("transfer-encoding")) == ["chunked"]
        forbidden = {"host", "content-length", "transfer-encoding"}
        assert not forbidden.intersection(name for name, _ in request.trailers)
    else:
        assert not request.trailers
        elements = {element.strip(" \t") for value in lengths for element in value.split(",")}
        assert len(elements) <= 1, lengths
        assert len(request.body) == (int(elements.pop()) if elements else 0), (lengths, len(request.body))
    connection = _tokens(headers.get_all("connection"))
    assert request.keep_alive == ("close" not in connection
                                  and (request.http_version == (1, 1) or "keep-alive" in connection))
    if request.expect_continue:
        assert request.http_version == (1, 1) and "100-continue" in _tokens(headers.get_all("expect"))


def parse(pieces: list[bytes], limits: Limits) -> Parsed:
    """Feed ``pieces`` one by one, pulling requests until None after each;
    check every request and the parser's state rules on the way."""
    parser = RequestParser(limits)
    requests = []
    try:
        for piece in pieces:
            parser.feed(piece)
            while (request := parser.next_request()) is not None:
                check_request(request, limits)
                requests.append(_normalized(request))
                assert parser.finished == (not request.keep_alive)
    except HttpError as error:
        assert error.status in PARSER_STATUSES, f"undocumented status {error.status}: {error}"
        # Dead from now on: every later call raises the same error.
        for later in (parser.next_request, lambda: parser.feed(b"GET / HTTP/1.1\r\n")):
            try:
                later()
            except HttpError as again:
                assert again.status == error.status
            else:
                raise AssertionError("the parser went on after raising HttpError")
        return Parsed(tuple(requests), error.status, False)
    return Parsed(tuple(requests), None, parser.in_progress)


#: Whether a refusal may carry a different status depending on how the bytes
#: arrived. The parser refuses hopeless input as early as it can, checking
#: what has arrived so far, and reports the first fault those checks meet; a
#: head or trailer section that breaks two rules at once (a control byte and
#: its size, say) can so be refused as 400 in pieces and as 414 or 431 whole.
#: That it is refused never depends on the cut; only which of its faults is
#: named.
REFUSAL_STATUS_MAY_DEPEND_ON_ARRIVAL = True


def _summary(parsed: Parsed) -> str:
    return f"{len(parsed.requests)} requests, status {parsed.status}, in progress {parsed.in_progress}"


def check_same_verdict(pieces: list[bytes], limits: Limits, whole: Parsed) -> None:
    """The stream cut into ``pieces`` parses as it did whole."""
    split = parse(pieces, limits)
    if split == whole:
        return
    if REFUSAL_STATUS_MAY_DEPEND_ON_ARRIVAL and split.requests == whole.requests \
            and None not in (split.status, whole.status):
        return
    raise AssertionError(f"whole: {_summary(whole)}; cut at {_cut_positions(pieces)[:16]}: "
                         f"{_summary(split)}")


def _refusal_corpus_seeds(prefix: bytes) -> Iterator[tuple[str, bytes]]:
    """The parser's refusal corpus (tests/http/corpus) as stream inputs
    behind ``prefix`` (a flags byte and its cut gaps)."""
    for path in sorted(REFUSAL_CORPUS.glob("*.http")):
        yield f"{REFUSAL_CORPUS.name}/{path.name}", prefix + path.read_bytes()


# --- request parser -----------------------------------------------------------------


@harness("http-request-parser", max_len=8192, dictionary="http.dict",
         extra_seeds=lambda: _refusal_corpus_seeds(bytes([_BYTE_BY_BYTE])))
def request_parser(data: bytes) -> None:
    """Any bytes, cut anywhere: only documented refusals, every request well
    formed, and the same verdict however the bytes arrive."""
    _, stream, splits, limits = _stream_input(FuzzInput(data))
    whole = parse([stream], limits)
    for pieces in splits:
        check_same_verdict(pieces, limits, whole)


# --- chunked decoder --------------------------------------------------------------------

CHUNKED_HEADS = (
    b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    b"PUT /upload HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: ,chunked\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nTransfer-Encoding: \r\nHost: h\r\n\r\n",
)
_HEAD_CHOICE = 0x60  # flags bits choosing one of CHUNKED_HEADS

_FIELD_BYTES = rb"[\t\x20-\x7e\x80-\xff]"
# RFC 9112 §7.1.1, with the documented 16-digit cap: chunk-size *( BWS ";"
# BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN_BYTES = _TOKEN.pattern
_RFC_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _TOKEN_BYTES + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_BYTES + rb"|" + _QUOTED_STRING + rb"))?)*")
# parser.py documents exactly this grammar.
_DOCUMENTED_CHUNK_LINE = _RFC_CHUNK_LINE
_FIELD_LINE = re.compile(rb"(" + _TOKEN_BYTES + rb"):(" + _FIELD_BYTES + rb"*)")
_TRAILER_FORBIDDEN = (b"host", b"content-length", b"transfer-encoding")


@dataclass(frozen=True)
class Chunked:
    """A reference decoder's verdict on a chunked body."""
    verdict: str  # "complete", "incomplete", "invalid" or "too-large"
    body: bytes = b""
    trailers: tuple[tuple[str, str], ...] = ()
    end: int = 0  # where the body's encoding ends (complete only)


def decode_chunked(data: bytes, limits: Limits, chunk_line: re.Pattern) -> Chunked:
    """A straightforward decoder of RFC 9112 §7.1 with ``chunk_line`` as the
    grammar of size lines and the parser's limits and trailer rules."""
    pos, body = 0, bytearray()
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return Chunked("incomplete")
        line = data[pos:end]
        match = chunk_line.fullmatch(line)
        if len(line) > limits.max_chunk_line or not match:
            return Chunked("invalid")
        size = int(match[1], 16)
        pos = end + 2
        if not size:
            break
        if len(body) + size > limits.max_body:
            return Chunked("too-large")
        after = data[pos + size:pos + size + 2]
        if not b"\r\n".startswith(after):
            return Chunked("invalid")
        if len(after) < 2:
            return Chunked("incomplete")
        body += data[pos:pos + size]
        pos += size + 2
    if data.startswith(b"\r\n", pos):
        return Chunked("complete", bytes(body), (), pos + 2)
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        return Chunked("incomplete")
    lines = data[pos:end].split(b"\r\n")
    if end - pos > limits.max_header_block or len(lines) > limits.max_headers:
        return Chunked("invalid")
    trailers = []
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)
        if not match or match[1].lower() in _TRAILER_FORBIDDEN:
            return Chunked("invalid")
        trailers.append((match[1].lower().decode(), match[2].strip(b" \t").decode("latin-1")))
    return Chunked("complete", bytes(body), tuple(trailers), end + 4)


@harness("http-chunked", max_len=4096, dictionary="http.dict")
def chunked_body(data: bytes) -> None:
    """A chunked body (and whatever follows it) behind a fixed request head,
    through the parser, against two reference decoders: the grammar
    parser.py documents and RFC 9112's. What the parser accepts, the
    documented grammar accepts with the same body and trailers, and the
    bytes after it parse as they would on their own (no smuggling); what
    RFC 9112 accepts, the parser accepts; the parser never waits on a body
    that is already complete or already wrong."""
    flags, encoded, splits, limits = _stream_input(FuzzInput(data))
    head = CHUNKED_HEADS[(flags & _HEAD_CHOICE) >> 5]
    stream = head + encoded
    whole = parse([stream], limits)
    for pieces in splits:
        check_same_verdict([head + pieces[0], *pieces[1:]], limits, whole)
    documented = decode_chunked(encoded, limits, _DOCUMENTED_CHUNK_LINE)
    rfc = decode_chunked(encoded, limits, _RFC_CHUNK_LINE)
    if whole.requests:
        first = whole.requests[0]
        assert documented.verdict == "complete", documented
        assert (first[7], first[8]) == (documented.body, documented.trailers), documented
        after = parse([encoded[documented.end:]], limits)
        keep_alive = first[9]
        assert whole.requests[1:] == (after.requests if keep_alive else ())
        assert whole.status == (after.status if keep_alive else None)
    elif whole.status is not None:
        assert whole.status in (400, 413, 431), whole.status
        assert documented.verdict != "complete", "refused a body the documented grammar accepts"
        assert (whole.status == 413) == (documented.verdict == "too-large"), documented.verdict
    else:
        assert documented.verdict == "incomplete", f"waiting on a body that is {documented.verdict}"
    if rfc.verdict == "complete":
        assert whole.requests and (whole.requests[0][7], whole.requests[0][8]) == (rfc.body, rfc.trailers)


# --- parser against h11 --------------------------------------------------------------------


@harness("http-parser-vs-h11", max_len=4096, dictionary="http.dict",
         extra_seeds=lambda: _refusal_corpus_seeds(b""))
def parser_vs_h11(data: bytes) -> None:
    """Any bytes to both parsers: the same requests, and where one refuses
    and the other does not, a difference that
    tests/http/test_parser_h11_oracle.py documents. (The input is the stream
    alone: how the bytes arrive is the request parser harness's concern.)"""
    h11_oracle.check(data, [])


# --- Range ------------------------------------------------------------------------------------

_RANGE_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)", re.ASCII)
_BYTES_UNIT = re.compile(r"[ \t]*bytes[ \t]*", re.ASCII | re.IGNORECASE)


def reference_ranges(value: str, size: int) -> Optional[list[tuple[int, int]]]:
    """RFC 9110 §14.1.2 satisfiable ranges, merged, by brute force; with the
    choices static.py documents: OWS around the unit and elements, at most
    MAX_RANGES elements, at most 40 significant digits a number."""
    unit, equals, specs = value.partition("=")
    elements = specs.split(",")
    if not equals or not _BYTES_UNIT.fullmatch(unit) or len(elements) > MAX_RANGES:
        return None
    wanted = []
    for element in filter(None, (element.strip(" \t") for element in elements)):
        match = _RANGE_SPEC.fullmatch(element)
        if not match or any(len(digits.lstrip("0")) > 40 for digits in match.groups("")):
            return None
        if match[3] is not None:
            suffix = int(match[3])
            if suffix and size:
                wanted.append((max(0, size - suffix), size - 1))
            continue
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if match[2] and last < first:
            return None
        if first < size:
            wanted.append((first, min(last, size - 1)))
    if not any(element.strip(" \t") for element in elements):
        return None
    merged: list[tuple[int, int]] = []
    for first, last in sorted(wanted):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _file_size(fuzz: FuzzInput) -> int:
    choice = fuzz.byte()
    kind = choice & 3
    if kind == 0:
        return choice >> 2  # 0-63
    if kind == 1:
        return 100
    if kind == 2:
        return fuzz.integer(2)
    return fuzz.integer(8) >> 1  # up to 2**63 - 1, as st_size allows


@harness("http-range", max_len=1024, dictionary="range.dict")
def byte_ranges(data: bytes) -> None:
    """A file size, then a Range header value (latin-1, as the parser
    decodes it): never raises, and gives exactly the brute-force ranges."""
    fuzz = FuzzInput(data)
    size = _file_size(fuzz)
    value = fuzz.rest().decode("latin-1")
    ranges = parse_byte_ranges(value, size)
    assert ranges == reference_ranges(value, size), (ranges, reference_ranges(value, size))
    for first, last in ranges or ():
        assert 0 <= first <= last < size


# --- static file paths ---------------------------------------------------------------------


class RecordingTransport:
    """What StaticFiles sends, recorded instead of sent (files as their
    bytes: opening a FIFO would hang the harness, which libFuzzer reports)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.files: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(self.sent)

    def sendfile_ranged(self, before: bytes, path: bytes, after: Optional[bytes], offset: int,
                        nbytes: int) -> int:
        self.files.append(path)
        with open(path, "rb") as file:
            file.seek(offset)
            self.sent.append(bytes(before) + file.read(nbytes) + bytes(after or b""))
        return len(self.sent)


SECRET = b"secret-outside-the-root"


@dataclass(frozen=True)
class Site:
    """A root full of traps (symlinks out, a loop, a FIFO, odd names), reached
    through a symlink, next to files that must never be served."""
    base: str
    root: bytes  # the real root
    mounts: tuple[StaticFiles, ...]


@functools.cache
def site() -> Site:
    base = tempfile.mkdtemp(prefix="parallio-fuzz-static-")
    real = os.path.join(base, "real-root")
    outside = os.path.join(base, "outside")
    for directory in (real, outside, os.path.join(real, "sub"), os.path.join(real, "sub", "deeper")):
        os.mkdir(directory)
    files = {os.path.join(outside, "secret.txt"): SECRET, os.path.join(outside, "index.html"): SECRET,
             os.path.join(real, "file.txt"): b"inside", os.path.join(real, "sub", "index.html"): b"index",
             os.path.join(real, "sub", "inner.txt"): b"inner", os.path.join(real, "sp ace.txt"): b"space",
             os.path.join(real, "%2e%2e"): b"percent", os.path.join(real, "..."): b"dots"}
    for path, content in files.items():
        with open(path, "wb") as file:
            file.write(content)
    with open(os.path.join(os.fsencode(real), b"\xff.bin"), "wb") as file:
        file.write(b"not utf-8")
    links = {"link-in": "file.txt", "link-out": "../outside/secret.txt", "dir-out": "../outside",
             "abs-out": outside, "loop": "loop", "dangling": "nowhere", "sub/up": "..",
             "sub/up-out": "../..", "sub/deeper/up-out": "../../../outside"}
    for name, target in links.items():
        os.symlink(target, os.path.join(real, name))
    os.mkfifo(os.path.join(real, "fifo"))
    os.symlink(real, os.path.join(base, "root"))
    mounted = os.path.join(base, "root")  # a symlink to the root, as a user might pass
    mounts = (StaticFiles(mounted), StaticFiles(mounted, "/static/", listing=True))
    return Site(base, os.fsencode(os.path.realpath(real)), mounts)


def _inside(root: bytes, path: bytes) -> bool:
    return path == root or path.startswith(root + b"/")


@harness("http-static-paths", max_len=512, dictionary="paths.dict")
def static_paths(data: bytes) -> None:
    """A request target for StaticFiles over a root full of traps: only
    400/403/404 refusals, and whatever is sent is a regular file whose real
    path lies in the root and is the one the decoded path names (no file
    outside, no other file); a listing is of a directory in the root.

    Format: a flags byte (bit 0: the mount at /static/ with listings; bit 1:
    the target goes straight into a Request instead of through the parser,
    so it may have shapes the parser would refuse), then the target."""
    fuzz = FuzzInput(data)
    flags = fuzz.byte()
    target = fuzz.rest()
    layout = site()
    mount = layout.mounts[flags & 1]
    if flags & 2:
        # Only what the parser admits in a target (VCHAR), in any shape.
        text = bytes(byte for byte in target if 0x21 <= byte <= 0x7E).decode("ascii")
        raw_path, _, query = text.partition("?")
        request = Request("GET", text, raw_path, query, (1, 1), Headers([]), True, False)
    else:
        parser = RequestParser()
        try:
            parser.feed(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            request = parser.next_request()
        except HttpError:
            return
        if request is None or request.method != "GET":
            return
    transport = RecordingTransport()
    try:
        mount(transport, request)
    except HttpError as error:
        assert error.status in (400, 403, 404), error
        return
    for path in transport.files:
        assert _inside(layout.root, path) and os.path.realpath(path) == path, path
        assert os.path.isfile(path), path
        decoded = unquote_to_bytes(request.raw_path)[len(mount.prefix):]
        named = os.path.realpath(os.path.join(layout.root, *decoded.split(b"/")))
        assert path in (named, *(os.path.join(named, index) for index in mount.index)), (path, named)
    for response in transport.sent:
        assert SECRET not in response, response[:200]
        # A listing names the entries after its <ul> (before it, the title
        # echoes the request's path).
        entries = response.partition(b"<ul>")[2]
        assert b"secret.txt" not in entries, response


# --- response header writer ----------------------------------------------------------------

_VALUE_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUSES = sorted(REASONS)


def _header_item(fuzz: FuzzInput) -> str | bytes | bytearray:
    """A name or value: a length byte, that many bytes, decoded as the kind
    byte says."""
    kind = fuzz.byte()
    raw = fuzz.take(fuzz.byte() % 48)
    if kind % 4 == 0:
        return raw
    if kind % 4 == 1:
        return bytearray(raw)
    return raw.decode("latin-1") if kind % 4 == 2 else raw.decode("utf-8", "replace")


def _value_ok(value: str | bytes | bytearray) -> bool:
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            return False
    return not (_VALUE_FORBIDDEN.search(value) or value.startswith((b" ", b"\t"))
                or value.endswith((b" ", b"\t")))


def _head_refused(status: int, content_length: Optional[int], chunked: bool,
                  version: tuple[int, int]) -> bool:
    """Whether render_head must refuse these arguments (ValueError)."""
    if not 100 <= status <= 999:
        return True
    if content_length is None and not chunked:
        return False
    no_content = status < 200 or status in (204, 304)
    return no_content or chunked and (content_length is not None or version < (1, 1))


def _as_bytes(item: str | bytes | bytearray) -> bytes:
    return item.encode("latin-1") if isinstance(item, str) else bytes(item)


def check_head(head: bytes, fields: list[tuple[bytes, bytes]]) -> None:
    """A head is a status line, field lines and a blank line: no CR, LF or NUL
    anywhere else, and the given fields appear whole, in order, unsplit."""
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1, head
    lines = head[:-4].split(b"\r\n")
    assert re.fullmatch(rb"HTTP/1\.1 [1-9][0-9][0-9] [\t \x21-\x7e]*", lines[0]), lines[0]
    rendered = []
    for line in lines[1:]:
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line, line
        name, colon, value = line.partition(b": ")
        assert colon and _TOKEN.fullmatch(name), line
        rendered.append((name, value))
    position = 0
    for field in fields:
        assert field in rendered[position:], (field, rendered)
        position = rendered.index(field, position) + 1


@harness("http-response-headers", max_len=1024, dictionary="http.dict")
def response_headers(data: bytes) -> None:
    """Header names and values of every kind the API takes: accepted exactly
    when they are a token and a value without CR, LF, NUL, other controls or
    surrounding whitespace; whatever is accepted renders into heads whose
    every line is whole (no response splitting).

    Format: a status choice byte, an options byte, then (kind byte, length
    byte, bytes) for each name and value in turn."""
    fuzz = FuzzInput(data)
    status_choice = fuzz.byte()
    options = fuzz.byte()
    status = _STATUSES[status_choice % len(_STATUSES)] if status_choice < 200 else 100 + status_choice * 4
    pairs = []
    while len(pairs) < 8:
        name, value = _header_item(fuzz), _header_item(fuzz)
        if not name and not value:
            break
        if isinstance(name, bytearray):
            name = bytes(name)  # HeaderPairs names are str or bytes
        pairs.append((name, value))
    valid = []
    for name, value in pairs:
        name_ok = bool(_TOKEN.fullmatch(name.encode("latin-1", "replace") if isinstance(name, str) else name))
        try:
            assert check_header_name(name) == _as_bytes(name) and name_ok
        except ValueError:
            assert not name_ok, name
        try:
            assert check_header_value(value) == _as_bytes(value) and _value_ok(value)
        except ValueError:
            assert not _value_ok(value), value
        if name_ok and _value_ok(value):
            valid.append((_as_bytes(name), _as_bytes(value)))
    all_valid = len(valid) == len(pairs)
    try:
        prepared = prepare_headers(pairs)
    except ValueError:
        assert not all_valid
        return
    assert all_valid and prepared == b"".join(n + b": " + v + b"\r\n" for n, v in valid)
    keep_alive, version = bool(options & 1), (1, 0) if options & 2 else (1, 1)
    content_length = len(data) if options & 4 else None
    chunked = bool(options & 8)
    refused = _head_refused(status, content_length, chunked, version)
    for headers in (prepared, pairs):
        try:
            head = render_head(status, headers, content_length=content_length, chunked=chunked,
                               keep_alive=keep_alive, request_version=version)
        except ValueError:
            assert refused, (status, content_length, chunked, version)
        else:
            assert not refused, (status, content_length, chunked, version)
            check_head(head, valid)
    if status >= 200 and status not in (204, 304):
        # Content-Type takes str or bytes (a bytearray is not hashable).
        content_type = bytes(pairs[0][1]) if pairs and isinstance(pairs[0][1], bytearray) \
            else pairs[0][1] if pairs else b"text/plain"
        try:
            response = simple_response(status, b"body", content_type, keep_alive, prepared,
                                       request_version=version)
        except ValueError:
            assert not _value_ok(content_type) or status > 999
        else:
            check_head(response[:-4], [(b"Content-Type", _as_bytes(content_type)), *valid])
    check_head(b"HTTP/1.1 200 OK\r\n" + last_chunk(prepared)[3:], valid)
