"""Unit tests for parallio.http.parser.RequestParser."""

from __future__ import annotations

from typing import Optional

import pytest

from parallio.http.parser import Headers, HttpError, Limits, Request, RequestParser

GET = b"GET /index.html?a=1&b=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"


def parse(data: bytes, limits: Optional[Limits] = None) -> list[Request]:
    parser = RequestParser(limits)
    parser.feed(data)
    return list(parser)


def parse_in_pieces(data: bytes, cuts: list[int], limits: Optional[Limits] = None) -> list[Request]:
    parser = RequestParser(limits)
    out: list[Request] = []
    start = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[start:cut])
        out.extend(parser)
        start = cut
    return out


def error_of(data: bytes, limits: Optional[Limits] = None) -> HttpError:
    parser = RequestParser(limits)
    parser.feed(data)
    with pytest.raises(HttpError) as info:
        list(parser)
    return info.value


def status_of(data: bytes, limits: Optional[Limits] = None) -> int:
    return error_of(data, limits).status


def summary(request: Request) -> tuple:
    return (
        request.method,
        request.target,
        request.raw_path,
        request.path,
        request.query,
        request.http_version,
        list(request.headers),
        request.body,
        list(request.trailers),
        request.keep_alive,
        request.expect_continue,
    )


def assert_split_invariant(data: bytes, limits: Optional[Limits] = None) -> list[Request]:
    """Parse whole, at every single cut point, and byte by byte: same result."""
    whole = [summary(r) for r in parse(data, limits)]
    for cut in range(1, len(data)):
        assert [summary(r) for r in parse_in_pieces(data, [cut], limits)] == whole, cut
    assert [summary(r) for r in parse_in_pieces(data, list(range(1, len(data))), limits)] == whole
    return parse(data, limits)


# --- request line ---------------------------------------------------------------


def test_simple_get() -> None:
    (request,) = parse(GET)
    assert request.method == "GET"
    assert request.target == "/index.html?a=1&b=2"
    assert request.raw_path == request.path == "/index.html"
    assert request.query == "a=1&b=2"
    assert request.http_version == (1, 1)
    assert list(request.headers) == [("host", "example.com"), ("accept", "*/*")]
    assert request.body == b""
    assert len(request.trailers) == 0
    assert request.keep_alive is True
    assert request.expect_continue is False


def test_percent_decoded_path_keeps_raw_path() -> None:
    (request,) = parse(b"GET /a%20b/%E2%82%AC/%2F?q=%20 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.raw_path == "/a%20b/%E2%82%AC/%2F"
    assert request.path == "/a b/\u20ac//"
    assert request.query == "q=%20"  # the query is left for the application


def test_invalid_utf8_in_path_becomes_replacement_character() -> None:
    (request,) = parse(b"GET /%FF HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "/\ufffd"


@pytest.mark.parametrize(
    "target, raw_path, query",
    [
        ("http://example.com/a/b?c=d", "/a/b", "c=d"),
        ("http://example.com", "/", ""),
        ("http://example.com?x", "/", "x"),
        ("https://[::1]:8443/p", "/p", ""),
    ],
)
def test_absolute_form(target: str, raw_path: str, query: str) -> None:
    (request,) = parse(f"GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode())
    assert request.target == target
    assert (request.raw_path, request.query) == (raw_path, query)


def test_authority_form_for_connect() -> None:
    (request,) = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert request.method == "CONNECT"
    assert request.target == "example.com:443"
    assert (request.raw_path, request.path, request.query) == ("", "", "")


def test_asterisk_form_for_options() -> None:
    (request,) = parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (request.target, request.raw_path, request.path) == ("*", "*", "*")


@pytest.mark.parametrize(
    "line",
    [
        b"GET * HTTP/1.1",  # asterisk-form is for OPTIONS only
        b"CONNECT /path HTTP/1.1",  # CONNECT needs authority-form
        b"CONNECT example.com HTTP/1.1",  # authority-form needs a port
        b"CONNECT example.com:https HTTP/1.1",
        b"GET example.com:80 HTTP/1.1",  # authority-form for a non-CONNECT method
        b"GET index.html HTTP/1.1",  # relative target
        b"GET http:/x HTTP/1.1",
        b"GET http:///path HTTP/1.1",  # absolute-form without authority
        b"GET 1http://h/ HTTP/1.1",  # scheme must start with a letter
        b"GET http://h/ /x HTTP/1.1",
        b"GET /a\xe9 HTTP/1.1",  # obs-text in the target
        b"GET /a\tb HTTP/1.1",
        b"GET  / HTTP/1.1",  # two spaces
        b"GET / HTTP/1.1 ",  # trailing space
        b" GET / HTTP/1.1",
        b"GET\t/ HTTP/1.1",
        b"GET /",  # HTTP/0.9 simple request
        b"GET / HTTP/1.1 extra",
        b"G(T / HTTP/1.1",  # non-token method
        b"/ HTTP/1.1",
        b"GET / http/1.1",  # HTTP-name is case-sensitive
        b"GET / HTTP/1",
        b"GET / HTTP/1.10",
        b"GET / HTTP/1.1.1",
        b"GET / HTTPS/1.1",
        b"GET / HTTP/a.b",
    ],
)
def test_malformed_request_line_is_400(line: bytes) -> None:
    assert status_of(line + b"\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/9.9"])
def test_wellformed_unsupported_version_is_505(version: bytes) -> None:
    assert status_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 505


def test_methods_are_case_sensitive_tokens() -> None:
    requests = parse(
        b"get / HTTP/1.1\r\nHost: h\r\n\r\n"
        b"M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n"
        b"X!#$%&'*+-.^_`|~9 / HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [r.method for r in requests] == ["get", "M-SEARCH", "X!#$%&'*+-.^_`|~9"]


def test_http10_request() -> None:
    (request,) = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert request.http_version == (1, 0)
    assert request.keep_alive is False
    assert len(request.headers) == 0


# --- header fields ----------------------------------------------------------------


def test_headers_api() -> None:
    (request,) = parse(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Tag: one\r\nx-tag: two\r\nACCEPT:  text/html \t\r\n"
        b"Empty:\r\nTabbed: a\tb  c\r\n\r\n"
    )
    headers = request.headers
    assert isinstance(headers, Headers)
    assert headers.get("X-TAG") == "one"
    assert headers.get_all("x-Tag") == ["one", "two"]
    assert headers.get("accept") == "text/html"  # OWS around the value is not part of it
    assert headers.get("empty") == ""
    assert headers.get("tabbed") == "a\tb  c"
    assert headers.get("missing") is None
    assert headers.get("missing", "default") == "default"
    assert headers.get_all("missing") == []
    assert "Host" in headers and "nope" not in headers and 3 not in headers
    assert len(headers) == 6
    assert [name for name, _ in headers] == ["host", "x-tag", "x-tag", "accept", "empty", "tabbed"]
    assert headers == Headers(list(headers))
    assert "x-tag" in repr(headers)


def test_obs_text_in_values_survives_as_latin1() -> None:
    (request,) = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9 \x80\xff\r\n\r\n")
    value = request.headers.get("x-name")
    assert value == "caf\xe9 \x80\xff"
    assert value.encode("latin-1") == b"caf\xe9 \x80\xff"


@pytest.mark.parametrize(
    "field",
    [
        b"Bad Name: x",  # space inside a name
        b"Host : h",  # whitespace before the colon
        b"Host\t: h",
        b": no name",
        b"no colon",
        b"N\xe9: x",  # obs-text in a name
        b"X-A(b): x",
        b"X-A\"b: x",
        b"X-A\x00: x",
        b"X: a\x00b",
        b"X: a\x01b",
        b"X: a\x1fb",
        b"X: a\x7fb",
        b"X: a\x0bb",
        b"X: a\x0cb",
        b"X: a\rb",  # bare CR
        b"X: a\nb",  # bare LF inside the head
    ],
)
def test_malformed_field_is_400(field: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n\r\n") == 400


def test_obs_fold_is_400() -> None:
    error = error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n  continued\r\n\r\n")
    assert error.status == 400 and "folding" in error.reason
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n\tb: c\r\n\r\n") == 400


def test_whitespace_before_first_field_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: y\n\r\n",
    ],
)
def test_bare_lf_line_endings_are_rejected(data: bytes) -> None:
    # Either "bare LF" (the head ended) or still waiting for CRLFCRLF, which
    # a complete \n\n head never gets: feeding a terminator exposes the 400.
    parser = RequestParser()
    parser.feed(data + b"\r\n\r\n")
    with pytest.raises(HttpError) as info:
        list(parser)
    assert info.value.status == 400


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\nHost", b"GET / HTTP/1.1\r\nHost: h\nX", b"\n"])
def test_bare_lf_is_rejected_without_waiting_for_the_head_to_end(data: bytes) -> None:
    parser = RequestParser()
    with pytest.raises(HttpError) as info:
        for index in range(len(data)):
            parser.feed(data[index : index + 1])
            assert parser.next_request() is None
    assert info.value.status == 400
    assert "LF" in info.value.reason


def test_leading_empty_lines_are_skipped() -> None:
    requests = assert_split_invariant(b"\r\n\r\n" + GET + b"\r\n" + GET)
    assert len(requests) == 2


def test_leading_bare_lf_is_400() -> None:
    assert status_of(b"\n" + GET) == 400


# --- Host -------------------------------------------------------------------------


def test_http11_without_host_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == 400


def test_http10_without_host_is_fine() -> None:
    (request,) = parse(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")
    assert request.headers.get("host") is None


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_two_hosts_is_400(version: bytes) -> None:
    assert status_of(b"GET / HTTP/" + version + b"\r\nHost: a\r\nHost: a\r\n\r\n") == 400


@pytest.mark.parametrize("host", [b"", b"example.com", b"example.com:8080", b"[::1]:80", b"a_b-c~d.%41"])
def test_valid_hosts(host: bytes) -> None:
    (request,) = parse(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert request.headers.get("host") == host.decode()


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"a@b", b"a\\b", b"a?b", b"a#b", b"h\xe9", b'a"b', b"a<b"])
def test_invalid_host_is_400(host: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400


def test_absolute_form_authority_is_validated() -> None:
    assert status_of(b"GET http://a b/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400
    assert status_of(b"GET http://a<b/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400


# --- keep-alive -------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, connection, keep_alive",
    [
        (b"1.1", None, True),
        (b"1.1", b"keep-alive", True),
        (b"1.1", b"close", False),
        (b"1.1", b"Close", False),
        (b"1.1", b"keep-alive, CLOSE", False),
        (b"1.1", b"upgrade", True),
        (b"1.1", b" , ,close,", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"foo, keep-alive", True),
        (b"1.0", b"keep-alive, close", False),
        (b"1.0", b"keep-alivex", False),
    ],
)
def test_keep_alive(version: bytes, connection: Optional[bytes], keep_alive: bool) -> None:
    head = b"GET / HTTP/" + version + b"\r\nHost: h\r\n"
    if connection is not None:
        head += b"Connection: " + connection + b"\r\n"
    (request,) = parse(head + b"\r\n")
    assert request.keep_alive is keep_alive


def test_connection_tokens_span_repeated_fields() -> None:
    (request,) = parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo\r\nConnection: close\r\n\r\n")
    assert request.keep_alive is False
    (request,) = parse(b"GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n")
    assert request.keep_alive is True


def test_nothing_is_accepted_after_a_closing_request() -> None:
    parser = RequestParser()
    closing = b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    parser.feed(GET + closing + GET + b"garbage that would be a 400")
    assert [r.raw_path for r in parser] == ["/index.html", "/last"]
    assert parser.finished
    assert not parser.in_progress
    parser.feed(GET)
    assert parser.next_request() is None
    assert parser.finished


def test_http10_without_keep_alive_finishes_the_parser() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.0\r\n\r\n" + GET)
    assert len(list(parser)) == 1
    assert parser.finished


# --- pipelining and splitting -----------------------------------------------------------


PIPELINE = (
    GET
    + b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world"
    + b"PUT /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nChecksum: abc\r\nX-More: 1\r\n\r\n"
    + b"DELETE /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    + b"GET /y HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
)


def test_pipelined_requests_in_one_feed() -> None:
    requests = parse(PIPELINE)
    assert [(r.method, r.raw_path) for r in requests] == [
        ("GET", "/index.html"),
        ("POST", "/form"),
        ("PUT", "/up"),
        ("DELETE", "/x"),
        ("GET", "/y"),
    ]
    assert requests[1].body == b"hello world"
    assert requests[2].body == b"hello 0123456789"
    assert list(requests[2].trailers) == [("checksum", "abc"), ("x-more", "1")]
    assert requests[3].keep_alive is True
    assert requests[4].keep_alive is False


def test_pipeline_split_at_every_byte() -> None:
    assert len(assert_split_invariant(PIPELINE)) == 5


def test_feed_copies_mutable_buffers() -> None:
    parser = RequestParser()
    buffer = bytearray(GET[:20])
    parser.feed(buffer)
    buffer[:] = b"X" * 20
    view_source = bytearray(GET[20:])
    parser.feed(memoryview(view_source))
    view_source[:] = b"X" * len(view_source)
    (request,) = list(parser)
    assert request.target == "/index.html?a=1&b=2"


def test_feeding_nothing_is_harmless() -> None:
    parser = RequestParser()
    parser.feed(b"")
    assert parser.next_request() is None
    parser.feed(GET[:10])
    parser.feed(b"")
    parser.feed(GET[10:])
    assert parser.next_request() is not None


def test_identical_heads_give_independent_requests() -> None:
    # Heads are cached per parser; the request objects must still be fresh.
    post = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
    first, second = parse(post + b"abc" + post + b"xyz")
    assert first is not second
    assert (first.body, second.body) == (b"abc", b"xyz")
    assert first.headers == second.headers


def test_large_body_in_small_feeds() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    data = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body + GET
    parser = RequestParser()
    requests = []
    for start in range(0, len(data), 4000):
        parser.feed(data[start : start + 4000])
        requests.extend(parser)
    assert [r.body for r in requests] == [body, b""]


def test_large_chunked_body_in_small_feeds() -> None:
    pieces = [bytes([n % 256]) * (n * 7 + 1) for n in range(300)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded + GET
    parser = RequestParser()
    requests = []
    for start in range(0, len(data), 1000):
        parser.feed(data[start : start + 1000])
        requests.extend(parser)
    assert [r.body for r in requests] == [b"".join(pieces), b""]


def test_in_progress() -> None:
    parser = RequestParser()
    assert not parser.in_progress
    parser.feed(b"\r\n")
    assert parser.next_request() is None
    assert not parser.in_progress  # a stray empty line is not a request
    parser.feed(GET[:5])
    assert parser.next_request() is None
    assert parser.in_progress
    parser.feed(GET[5:])
    assert parser.next_request() is not None
    assert not parser.in_progress
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nx")
    assert parser.next_request() is None
    assert parser.in_progress


# --- Content-Length ----------------------------------------------------------------


def cl_request(*values: bytes, body: bytes = b"") -> bytes:
    fields = b"".join(b"Content-Length: " + v + b"\r\n" for v in values)
    return b"POST / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n" + body


@pytest.mark.parametrize(
    "values, length",
    [
        ((b"0",), 0),
        ((b"5",), 5),
        ((b"005",), 5),
        ((b"  5 \t",), 5),  # OWS around a field value is not part of it
        ((b"5", b"5"), 5),
        ((b"5, 5",), 5),
        ((b"5,5", b"5"), 5),
    ],
)
def test_valid_content_length(values: tuple[bytes, ...], length: int) -> None:
    (request,) = parse(cl_request(*values, body=b"x" * length))
    assert request.body == b"x" * length


@pytest.mark.parametrize(
    "values",
    [
        (b"+5",),
        (b"-1",),
        (b"5.0",),
        (b"0x5",),
        (b"5 5",),
        (b"",),
        (b"five",),
        (b"\xb2",),  # latin-1 superscript two: str.isdigit() says yes
        (b"5,",),
        (b",5",),
        (b"5, 6",),
        (b"5", b"6"),
        (b"5", b"05"),  # same number, different text: h11 rejects this too
    ],
)
def test_invalid_content_length_is_400(values: tuple[bytes, ...]) -> None:
    assert status_of(cl_request(*values, body=b"xxxxxxxxxx")) == 400


def test_content_length_over_limit_is_413_before_the_body() -> None:
    limits = Limits(max_body=100)
    parser = RequestParser(limits)
    parser.feed(cl_request(b"101"))  # no body byte sent yet
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 413
    (request,) = parse(cl_request(b"100", body=b"x" * 100), limits)
    assert len(request.body) == 100


def test_absurd_content_length_is_413() -> None:
    assert status_of(cl_request(b"9" * 5000)) == 413


def test_leading_zeros_do_not_count_against_the_limit() -> None:
    # 5001 digits: more than int() accepts by default, yet the value is 1.
    (request,) = parse(cl_request(b"0" * 5000 + b"1", body=b"x"))
    assert request.body == b"x"


def test_get_with_body() -> None:
    (request,) = parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert request.body == b"hi"


# --- Transfer-Encoding and chunked -------------------------------------------------------


def te_request(*values: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    fields = b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in values)
    return b"POST / HTTP/" + version + b"\r\nHost: h\r\n" + fields + extra + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("values", [(b"chunked",), (b"Chunked",), (b"CHUNKED ",), (b"chunked,",), (b", chunked",)])
def test_chunked_spellings(values: tuple[bytes, ...]) -> None:
    (request,) = parse(te_request(*values))
    assert request.body == b""


@pytest.mark.parametrize(
    "values, status",
    [
        ((b"gzip",), 400),  # chunked is not final: framing unknowable
        ((b"chunked, gzip",), 400),
        ((b"",), 400),
        ((b",",), 400),
        ((b"chunked, chunked",), 400),
        ((b"chunked", b"chunked"), 400),
        ((b"gzip, chunked",), 501),
        ((b"identity, chunked",), 501),
        ((b"gzip", b"chunked"), 501),
        ((b"chunked;q=1",), 400),
        ((b"xchunked",), 400),
        ((b"chunked x",), 400),
    ],
)
def test_transfer_encoding_errors(values: tuple[bytes, ...], status: int) -> None:
    assert status_of(te_request(*values)) == status


def test_transfer_encoding_in_http10_is_400() -> None:
    assert status_of(te_request(b"chunked", version=b"1.0")) == 400


def test_content_length_with_transfer_encoding_is_400() -> None:
    assert status_of(te_request(b"chunked", extra=b"Content-Length: 5\r\n")) == 400
    assert status_of(te_request(b"chunked", extra=b"Content-Length: 0\r\n")) == 400


def chunked_request(encoded: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded


@pytest.mark.parametrize(
    "encoded, body",
    [
        (b"0\r\n\r\n", b""),
        (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"0003\r\nabc\r\n000\r\n\r\n", b"abc"),
        (b"3;ext\r\nabc\r\n0;last=1\r\n\r\n", b"abc"),
        (b'3;a=b;c="d e"\r\nabc\r\n0\r\n\r\n', b"abc"),
        (b"3 ;ext\r\nabc\r\n0\r\n\r\n", b"abc"),  # BWS before ';' (RFC 9112 §7.1.1)
        (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
        (b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),  # 16 digits: the most allowed
    ],
)
def test_chunked_bodies(encoded: bytes, body: bytes) -> None:
    (request,) = assert_split_invariant(chunked_request(encoded))
    assert request.body == body


def test_trailers() -> None:
    (request,) = assert_split_invariant(
        chunked_request(b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\nx-sum: 2\r\n\r\n")
    )
    assert request.body == b"abc"
    assert list(request.trailers) == [("expires", "never"), ("x-sum", "1"), ("x-sum", "2")]
    assert request.trailers.get_all("X-Sum") == ["1", "2"]
    assert "expires" not in request.headers


@pytest.mark.parametrize(
    "encoded",
    [
        b"x\r\nabc\r\n0\r\n\r\n",
        b"\r\nabc\r\n0\r\n\r\n",
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"+3\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b" 3\r\nabc\r\n0\r\n\r\n",
        b"3 x\r\nabc\r\n0\r\n\r\n",
        # RFC 9112 §7.1: whitespace only before a ';', and ';' needs a name.
        b"3\t\r\nabc\r\n0\r\n\r\n",
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"3;\r\nabc\r\n0\r\n\r\n",
        b"3;ext \r\nabc\r\n0\r\n\r\n",
        b"3;a=\r\nabc\r\n0\r\n\r\n",
        b'3;a="unterminated\r\nabc\r\n0\r\n\r\n',
        b"3;a\x00b\r\nabc\r\n0\r\n\r\n",
        b"3;a\rb\r\nabc\r\n0\r\n\r\n",
        b"3;a\nb\r\nabc\r\n0\r\n\r\n",
        b"3\nabc\r\n0\r\n\r\n",  # bare LF after the size
        b"3\r\nabcd\r\n0\r\n\r\n",  # data longer than announced
        b"3\r\nabc0\r\n\r\n",  # CRLF after data missing
        b"3\r\nabc\n0\r\n\r\n",
        b"3\r\nabc\r\r\n0\r\n\r\n",
        b"00000000000000003\r\nabc\r\n0\r\n\r\n",  # 17 digits
        b"3\r\nabc\r\n0\r\nX: a\nY: b\r\n\r\n",  # bare LF in trailers
        b"3\r\nabc\r\n0\r\nBad Name: a\r\n\r\n",
        b"3\r\nabc\r\n0\r\n folded\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX: \x01\r\n\r\n",
        b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",  # framing fields never in trailers
        b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n0\r\nHost: other\r\n\r\n",
    ],
)
def test_malformed_chunked_is_400(encoded: bytes) -> None:
    assert status_of(chunked_request(encoded) + GET) == 400


def test_overflowing_chunk_size_is_400_even_past_16_digits() -> None:
    assert status_of(chunked_request(b"f" * 40 + b"\r\n")) == 400


def test_chunk_line_limit() -> None:
    limits = Limits(max_chunk_line=20)
    (request,) = parse(chunked_request(b"1;" + b"e" * 18 + b"\r\nx\r\n0\r\n\r\n"), limits)
    assert request.body == b"x"
    assert status_of(chunked_request(b"1;" + b"e" * 19 + b"\r\nx\r\n0\r\n\r\n"), limits) == 400
    # Rejected without waiting for the line to end.
    assert status_of(chunked_request(b"1;" + b"e" * 30), limits) == 400


def test_chunked_body_limit_is_enforced_as_sizes_arrive() -> None:
    limits = Limits(max_body=10)
    (request,) = parse(chunked_request(b"5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n"), limits)
    assert request.body == b"1234567890"
    parser = RequestParser(limits)
    parser.feed(chunked_request(b"5\r\n12345\r\n6\r\n"))  # the data is not even sent
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 413


def test_trailer_section_limits() -> None:
    limits = Limits(max_header_block=40, max_headers=2)
    ok = chunked_request(b"0\r\nA: 1\r\nB: 2\r\n\r\n")
    assert len(parse(ok, limits)) == 1
    assert status_of(chunked_request(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), limits) == 431
    assert status_of(chunked_request(b"0\r\nA: " + b"x" * 40 + b"\r\n\r\n"), limits) == 431
    assert status_of(chunked_request(b"0\r\nA: " + b"x" * 40), limits) == 431  # incomplete
    # The limit counts each field line with its CRLF, as for the header
    # section, whether the section arrives whole or a byte at a time: 40
    # bytes pass, 41 do not.
    for size, allowed in ((40, True), (41, False)):
        section = b"A: " + b"x" * (size - 5) + b"\r\n"
        assert len(section) == size
        whole = chunked_request(b"0\r\n" + section + b"\r\n")
        if allowed:
            assert len(parse(whole, limits)) == 1
        else:
            assert status_of(whole, limits) == 431
        parser = RequestParser(limits)
        verdict = None
        try:
            for byte in range(len(whole)):
                parser.feed(whole[byte:byte + 1])
                while parser.next_request() is not None:
                    verdict = "request"
        except HttpError as error:
            verdict = error.status
        assert verdict == ("request" if allowed else 431), (size, verdict)


# --- Expect: 100-continue -------------------------------------------------------------


def test_wants_continue_after_head_only() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert parser.next_request() is None
    assert parser.wants_continue
    parser.continue_sent()
    assert not parser.wants_continue
    parser.feed(b"data")
    request = parser.next_request()
    assert request is not None and request.expect_continue and request.body == b"data"
    assert not parser.wants_continue


def test_no_continue_once_body_bytes_arrive() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n")
    assert parser.next_request() is None and parser.wants_continue
    parser.feed(b"da")  # the client gave up waiting (RFC 9110 §10.1.1)
    assert parser.next_request() is None
    assert not parser.wants_continue


def test_no_continue_when_body_came_with_head() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nda")
    assert parser.next_request() is None
    assert not parser.wants_continue


def test_no_continue_for_empty_body() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    request = parser.next_request()
    assert request is not None and request.expect_continue
    assert not parser.wants_continue


def test_continue_with_chunked_body() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert parser.next_request() is None and parser.wants_continue
    parser.feed(b"2\r\nok\r\n0\r\n\r\n")
    request = parser.next_request()
    assert request is not None and request.body == b"ok"
    assert not parser.wants_continue


def test_expect_ignored_in_http10() -> None:
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert parser.next_request() is None
    assert not parser.wants_continue
    parser.feed(b"data")
    request = parser.next_request()
    assert request is not None and request.expect_continue is False


@pytest.mark.parametrize("value", [b"200-ok", b"100-continue, foo", b"100-continuex"])
def test_unknown_expectation_is_417(value: bytes) -> None:
    assert status_of(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: " + value + b"\r\nContent-Length: 0\r\n\r\n") == 417


# --- limits ------------------------------------------------------------------------------


def test_request_line_limit() -> None:
    limits = Limits(max_request_line=30)
    line = b"GET /" + b"a" * 16 + b" HTTP/1.1"  # exactly 30 bytes
    assert len(line) == 30
    assert len(parse(line + b"\r\nHost: h\r\n\r\n", limits)) == 1
    longer = b"GET /" + b"a" * 17 + b" HTTP/1.1"
    assert status_of(longer + b"\r\nHost: h\r\n\r\n", limits) == 414
    assert status_of(longer + b"\r\n", limits) == 414  # head incomplete
    assert status_of(longer, limits) == 414  # line incomplete
    # 31 bytes without CRLF could still be a 30-byte line plus its CR.
    parser = RequestParser(limits)
    parser.feed(line + b"\r")
    assert parser.next_request() is None
    parser.feed(b"\nHost: h\r\n\r\n")
    assert parser.next_request() is not None


def test_default_request_line_limit_is_8k() -> None:
    assert Limits().max_request_line == 8192
    ok = b"GET /" + b"a" * (8192 - 14) + b" HTTP/1.1"
    assert len(ok) == 8192
    assert len(parse(ok + b"\r\nHost: h\r\n\r\n")) == 1
    assert status_of(b"GET /" + b"a" * 9000) == 414


def test_header_block_limit() -> None:
    limits = Limits(max_header_block=20)
    fields = b"Host: h\r\nX: 123456\r\n"  # 9 + 11 = 20 bytes with CRLFs
    assert len(fields) == 20
    assert len(parse(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", limits)) == 1
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: 1234567\r\n\r\n", limits) == 431
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: 123456789012", limits) == 431


def test_header_count_limit() -> None:
    limits = Limits(max_headers=3)
    head = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n"
    assert len(parse(head + b"\r\n", limits)) == 1
    assert status_of(head + b"C: 3\r\n\r\n", limits) == 431
    assert Limits().max_headers == 100
    many = b"".join(b"X-%d: v\r\n" % n for n in range(99))
    assert len(parse(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")) == 1
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nY: 1\r\n" + many + b"\r\n") == 431


def test_default_limits() -> None:
    assert Limits() == Limits(8192, 65536, 100, 16 * 1024 * 1024, 4096)


# --- errors --------------------------------------------------------------------------------


def test_error_is_sticky() -> None:
    parser = RequestParser()
    parser.feed(GET + b"BAD\x00 / HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    assert parser.next_request() is not None
    with pytest.raises(HttpError) as first:
        parser.next_request()
    with pytest.raises(HttpError) as again:
        parser.next_request()
    assert again.value is first.value
    with pytest.raises(HttpError) as on_feed:
        parser.feed(GET)
    assert on_feed.value is first.value
    assert str(first.value).startswith("400 ")
    assert not parser.wants_continue


def test_obviously_invalid_input_is_rejected_before_a_line_ends() -> None:
    parser = RequestParser()
    parser.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 400


def test_bad_request_line_is_rejected_before_the_head_ends() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert parser.next_request() is None
    parser = RequestParser()
    parser.feed(b"GET / HTTP/7.1\r\nHost: h\r\n")
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 505


def test_slow_head_is_validated_once_and_still_parses() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X-Filler: abcdefghij\r\n" * 50 + b"Host: h\r\n\r\n"
    (request,) = parse_in_pieces(data, list(range(1, len(data))))
    assert request.headers.get("host") == "h"


# --- detach --------------------------------------------------------------------------------


def test_detach_returns_the_unparsed_bytes() -> None:
    parser = RequestParser()
    parser.feed(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01tls bytes")
    request = parser.next_request()
    assert request is not None and request.method == "CONNECT"
    assert parser.detach() == b"\x16\x03\x01tls bytes"
    assert parser.finished
    parser.feed(b"more")
    assert parser.next_request() is None


def test_detach_mid_request_is_an_error() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
    assert parser.next_request() is None
    with pytest.raises(RuntimeError):
        parser.detach()


def test_limits_property() -> None:
    limits = Limits(max_body=1)
    assert RequestParser(limits).limits is limits


def test_request_repr() -> None:
    (request,) = parse(GET)
    assert repr(request).startswith("<Request GET /index.html?a=1&b=2 HTTP/1.1")
