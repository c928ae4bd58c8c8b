"""The parser's two head paths agree, its streaming mode, and the request
target and Host rules of RFC 9112 §3.2."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallio.http import parser as parser_module
from parallio.http.parser import EndOfMessage, HttpError, Limits, Request, RequestParser


PROFILE = settings(max_examples=int(os.environ.get("PARALLIO_PATHS_EXAMPLES", "300")),
                   deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))

def parse(data: bytes, limits: Limits | None = None) -> list[Request]:
    parser = RequestParser(limits)
    parser.feed(data)
    return list(parser)


def status_of(data: bytes) -> int:
    parser = RequestParser()
    parser.feed(data)
    with pytest.raises(HttpError) as info:
        list(parser)
    return info.value.status


# Pieces heads are built from: mostly valid, some subtly not.
_METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"PATCH", b"M-SEARCH", b"G\xc3T", b"GET ", b""]
_TARGETS = [b"/", b"/a/b?c=d", b"/%7Euser", b"/a#frag", b"*", b"http://h/p", b"/\x7f", b"/a b",
            b"/\x80"]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1"]
_NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"Transfer-Encoding", b"Connection",
          b"Expect", b"Accept", b"X-Id", b"Bad Name", b" folded", b"Host ", b"", b"x\x01"]
_VALUES = [b"h", b"example.com:8080", b"[::1]:80", b"a:b:c", b"close", b"keep-alive",
           b"Keep-Alive, x", b"0", b"12", b"chunked", b"gzip, chunked", b"100-continue",
           b"\tspaced \t", b"", b"nul\x00", b"caf\xe9", b"del\x7f", b"%zz", b" [::1"]


@st.composite
def heads(draw) -> bytes:
    line = b" ".join((draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_TARGETS)),
                      draw(st.sampled_from(_VERSIONS))))
    fields = draw(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)),
                           max_size=6))
    separator = draw(st.sampled_from([b": ", b":", b":\t", b" : "]))
    return line + b"".join(b"\r\n" + name + separator + value for name, value in fields)


def _slow(head: bytes, limits: Limits):
    try:
        fields, length = parser_module._parse_head(head, limits)
    except HttpError as error:
        return ("error", error.status)
    return ("ok", _comparable(fields), length)


def _of_request(request: Request) -> tuple:
    return (request.method, request.target, request.raw_path, request.query,
            request.http_version, list(request.headers), request.keep_alive,
            request.expect_continue, request.authority)


def _comparable(fields) -> tuple:
    *rest, headers, keep_alive, expect_continue, authority = fields
    if isinstance(headers, bytes):   # a field section, split when read
        headers = Request("GET", "/", "/", "", (1, 1), headers, True, False).headers
    return (*rest, list(headers), keep_alive, expect_continue, authority)


@PROFILE
@given(heads(), st.sampled_from([Limits(), Limits(max_headers=2, max_header_block=40,
                                                  max_request_line=12)]))
def test_common_head_path_agrees_with_the_field_by_field_parser(head: bytes, limits: Limits):
    data = head + b"\r\n\r\n"
    try:
        fast = parser_module._parse_common_head(data, 0, limits)
    except HttpError as error:
        fast_outcome = ("error", error.status)
    else:
        fast_outcome = None if fast is None else ("ok", _of_request(fast[0]), fast[1])
        if fast is not None:
            assert fast[2] == len(data)
    slow_outcome = _slow(head, limits)
    if fast_outcome is None:
        return  # the common path stepped aside; the reference decides
    assert fast_outcome == slow_outcome, head


def test_common_head_path_takes_the_common_request():
    data = (b"GET /plaintext?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
            b"Accept: */*\r\nConnection: keep-alive\r\n\r\n")
    parsed = parser_module._parse_common_head(data, 0, Limits())
    assert parsed is not None
    request, length, end = parsed
    fields = _of_request(request)
    assert fields[:5] == ("GET", "/plaintext?x=1", "/plaintext", "x=1", (1, 1))
    assert fields[5] == [("host", "127.0.0.1:8080"), ("user-agent", "wrk"),
                         ("accept", "*/*"), ("connection", "keep-alive")]
    assert length == 0 and fields[8] == "127.0.0.1:8080" and end == len(data)


# --- request targets and Host --------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/a#frag", b"/a?q=1#x", b"/#", b"http://h/a#f"])
def test_a_fragment_is_400(target: bytes) -> None:
    assert status_of(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 400


def test_absolute_form_overrides_host() -> None:
    (request,) = parse(b"GET http://real.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert request.authority == "real.example:8080"
    assert request.raw_path == "/p" and request.query == "q"
    assert request.headers.get("host") == "other"  # as received
    (request,) = parse(b"GET /p HTTP/1.1\r\nHost: from-header\r\n\r\n")
    assert request.authority == "from-header"
    (request,) = parse(b"GET /p HTTP/1.0\r\n\r\n")
    assert request.authority == ""


@pytest.mark.parametrize("authority", [
    b"h:80:90", b"h:port", b"[::1", b"[not-ip]:80", b"us@er:h", b"%zz", b"h h", b"h\\x",
])
def test_invalid_authorities_are_400(authority: bytes) -> None:
    assert status_of(b"GET http://" + authority + b"/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n") == 400


@pytest.mark.parametrize("host", [b"", b"h", b"h:", b"h:80", b"[::1]:443", b"127.0.0.1",
                                  b"xn--bcher-kva.example", b"a%20b", b"!$&'()*+,;="])
def test_valid_hosts(host: bytes) -> None:
    (request,) = parse(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert request.authority == host.decode()


# --- hopeless input is refused before its head is complete ------------------------------------

@pytest.mark.parametrize("start", [
    b"\x16\x03\x01\x02\x00",   # a TLS ClientHello
    b"GE\x00T",
    b"GET /\x01",
    b"GET / HTTP/1.1 extra",
    b"G(T /",
    b" GET /",
    b"GET /\rx",
    b"GET /caf\xc3\xa9",
])
def test_hopeless_request_lines_are_refused_at_once(start: bytes) -> None:
    parser = RequestParser()
    parser.feed(start)
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 400


def test_a_slow_but_valid_request_line_waits() -> None:
    parser = RequestParser()
    data = b"GET /some/path?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    for index in range(len(data) - 1):
        parser.feed(data[index:index + 1])
        assert parser.next_request() is None
    parser.feed(data[-1:])
    assert parser.next_request().path == "/some/path"


# --- streaming bodies --------------------------------------------------------------------------

def events(data: bytes, pieces: int = 1) -> list:
    parser = RequestParser(stream_bodies=True)
    out: list = []
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        parser.feed(data[start:start + step])
        while (event := parser.next_event()) is not None:
            out.append(event)
    return out


def test_streaming_delivers_head_pieces_and_end() -> None:
    data = (b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    for pieces in (1, 3, len(data)):
        got = events(data, pieces)
        assert isinstance(got[0], Request) and got[0].has_body and got[0].body == b""
        body = b"".join(event for event in got if isinstance(event, bytes))
        assert body == b"0123456789"
        kinds = [type(event).__name__ for event in got if not isinstance(event, bytes)]
        assert kinds == ["Request", "EndOfMessage", "Request", "EndOfMessage"]
        assert got[-2].path == "/next" and not got[-2].has_body


def test_streaming_chunked_with_trailers() -> None:
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
    for pieces in (1, 7, len(data)):
        got = events(data, pieces)
        assert b"".join(e for e in got if isinstance(e, bytes)) == b"abcde"
        assert isinstance(got[-1], EndOfMessage)
        assert list(got[-1].trailers) == [("x-sum", "5")]


def test_streaming_pieces_are_bounded_by_what_was_fed() -> None:
    parser = RequestParser(stream_bodies=True)
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() is None
    parser.feed(b"x" * 4096)
    assert parser.next_event() == b"x" * 4096
    assert parser.next_event() is None


def test_buffering_parser_refuses_next_event_and_streaming_refuses_next_request() -> None:
    with pytest.raises(RuntimeError):
        RequestParser().next_event()
    with pytest.raises(RuntimeError):
        RequestParser(stream_bodies=True).next_request()


def test_consumed_input_is_let_go() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.next_request() is not None
    assert parser.buffered == 0 and parser._buf == b""
