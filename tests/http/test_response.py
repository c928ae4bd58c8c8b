"""Tests for parallio.http.response, with h11 (as a client) reading what we write."""

from __future__ import annotations

import email.utils
import re

import h11
import pytest

from parallio import _httpdate
from parallio.http.response import (
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    REASONS,
    PreparedHeaders,
    check_header_name,
    check_header_value,
    chunk,
    chunk_header,
    http_date,
    last_chunk,
    prepare_headers,
    render_head,
    simple_response,
    status_line,
)

IMF_FIXDATE = re.compile(rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


def read_with_h11(raw: bytes, method: str = "GET") -> tuple[h11.Response, bytes, list]:
    """Parse ``raw`` as the response to a ``method`` request, as a client would."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    head = client.next_event()
    assert isinstance(head, h11.Response), head
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, body, list(event.headers)
        else:
            raise AssertionError(f"unexpected {event!r}")


class FrozenClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float) -> None:
        self.now = now
        monkeypatch.setattr(_httpdate, "time", lambda: self.now)


# --- status lines ---------------------------------------------------------------------


def test_status_lines() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(413) == b"HTTP/1.1 413 Content Too Large\r\n"
    assert status_line(299) == b"HTTP/1.1 299 \r\n"  # reason-phrase may be empty
    for bad in (99, 1000, -1, "200", 299.5):
        with pytest.raises(ValueError):
            status_line(bad)  # type: ignore[arg-type]


def test_every_parser_status_has_a_reason() -> None:
    for status in (400, 413, 414, 417, 431, 501, 505, 408, 500):
        assert REASONS[status]


def test_continue_response_is_well_formed() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="PUT", target="/", headers=[("Host", "h"), ("Expect", "100-continue"), ("Content-Length", "1")]))
    client.receive_data(CONTINUE_RESPONSE)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse) and event.status_code == 100


# --- Date ---------------------------------------------------------------------------------


def test_http_date_matches_the_rfc_format(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenClock(monkeypatch, 784111777.25)  # the RFC's own example
    assert http_date() == b"Sun, 06 Nov 1994 08:49:37 GMT"
    for now in (0, 951782400, 1700000000.999, 4102444800):
        clock.now = now
        assert http_date() == email.utils.formatdate(int(now), usegmt=True).encode()
        assert IMF_FIXDATE.fullmatch(http_date())


def test_http_date_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenClock(monkeypatch, 1700000000.0)
    first = http_date()
    clock.now = 1700000000.999
    assert http_date() is first
    clock.now = 1700000001.0
    second = http_date()
    assert second != first
    clock.now = 1699990000.5  # the clock stepped back: follow it
    assert http_date() == email.utils.formatdate(1699990000, usegmt=True).encode()


def test_date_header_in_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    FrozenClock(monkeypatch, 784111777)
    assert b"\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n" in render_head(200)
    assert b"Date:" not in render_head(200, date=False)


# --- header validation ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["X-Ok", b"x-ok", "!#$%&'*+-.^_`|~09azAZ"])
def test_valid_header_names(name: str | bytes) -> None:
    assert check_header_name(name) == (name.encode() if isinstance(name, str) else name)


@pytest.mark.parametrize("name", ["", "X Y", "X:Y", "X\r\nY", "caf\u00e9", "\u20ac", b"a\x00", "(x)"])
def test_invalid_header_names(name: str | bytes) -> None:
    with pytest.raises(ValueError):
        check_header_name(name)


@pytest.mark.parametrize("value", ["", "text/plain", "a\tb", "caf\u00e9", b"\x80\xff", "a  b", b"x"])
def test_valid_header_values(value: str | bytes) -> None:
    expected = value.encode("latin-1") if isinstance(value, str) else value
    assert check_header_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "a\r\nSet-Cookie: evil=1",
        b"a\r\nX: y",
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\x7fb",
        "a\x01b",
        " leading",
        "trailing\t",
        "\u20ac",  # not latin-1
        5,
        None,
    ],
)
def test_invalid_header_values(value: object) -> None:
    with pytest.raises(ValueError):
        check_header_value(value)  # type: ignore[arg-type]


SPLITTING = [("X-Evil", "a\r\nSet-Cookie: pwned=1")]


def test_no_response_splitting_anywhere() -> None:
    for call in (
        lambda: render_head(200, SPLITTING),
        lambda: simple_response(200, b"", b"text/plain", True, SPLITTING),
        lambda: simple_response(200, b"", "text/plain\r\nX: y"),
        lambda: prepare_headers(SPLITTING),
        lambda: last_chunk(SPLITTING),
        lambda: render_head(200, [("X-Bytes", b"a\nb")]),
        lambda: render_head(200, [("Bad\r\nName", "v")]),
        lambda: render_head(200, [("X", "tab-then-lf\t\n")]),
    ):
        with pytest.raises(ValueError):
            call()


def test_header_pairs_must_not_be_raw_bytes() -> None:
    with pytest.raises(TypeError):
        render_head(200, b"X-Unchecked: a\r\n")  # type: ignore[arg-type]


# --- render_head ----------------------------------------------------------------------------


def test_render_head_with_pairs() -> None:
    raw = render_head(201, [("Location", "/new"), (b"X-Bytes", b"v"), ("X-Tab", "a\tb")], content_length=4, date=False)
    assert raw == (
        b"HTTP/1.1 201 Created\r\nLocation: /new\r\nX-Bytes: v\r\nX-Tab: a\tb\r\n"
        b"Content-Length: 4\r\n\r\n"
    )
    head, body, _ = read_with_h11(raw + b"abcd")
    assert head.status_code == 201 and body == b"abcd"


def test_render_head_with_prepared_headers() -> None:
    prepared = prepare_headers([("Server", "parallio"), ("Content-Type", "text/plain")])
    assert isinstance(prepared, PreparedHeaders)
    assert prepared == b"Server: parallio\r\nContent-Type: text/plain\r\n"
    raw = render_head(200, prepared, content_length=0, date=False)
    assert raw == b"HTTP/1.1 200 OK\r\nServer: parallio\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    assert render_head(200, prepare_headers([]), date=False) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_render_head_accepts_any_iterable_of_pairs() -> None:
    raw = render_head(200, (pair for pair in [("A", "1"), ("B", "2")]), date=False)
    assert raw == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"


def test_connection_fields() -> None:
    assert b"Connection: close\r\n" in render_head(200, keep_alive=False)
    assert b"Connection" not in render_head(200)
    assert b"Connection: keep-alive\r\n" in render_head(200, request_version=(1, 0))
    assert b"Connection: close\r\n" in render_head(200, keep_alive=False, request_version=(1, 0))


def test_head_response_states_length_without_body() -> None:
    raw = render_head(200, [("Content-Type", "text/plain")], content_length=1234)
    head, body, _ = read_with_h11(raw, method="HEAD")
    assert head.status_code == 200 and body == b""
    assert dict(head.headers)[b"content-length"] == b"1234"


def test_chunked_response_round_trip() -> None:
    raw = render_head(200, [("Content-Type", "text/plain")], chunked=True)
    raw += chunk(b"hello ") + chunk(b"") + chunk(b"world") + last_chunk([("X-Checksum", "42")])
    head, body, trailers = read_with_h11(raw)
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"hello world"
    assert trailers == [(b"x-checksum", b"42")]


def test_gather_chunk_pieces() -> None:
    data = b"x" * 300
    assert chunk_header(len(data)) + data + b"\r\n" == chunk(data) == b"12c\r\n" + data + b"\r\n"
    with pytest.raises(ValueError):
        chunk_header(0)
    assert last_chunk() == LAST_CHUNK == b"0\r\n\r\n"
    assert last_chunk(prepare_headers([("A", "b")])) == b"0\r\nA: b\r\n\r\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": 204, "content_length": 0},
        {"status": 304, "content_length": 10},
        {"status": 101, "chunked": True},
        {"status": 200, "chunked": True, "content_length": 3},
        {"status": 200, "chunked": True, "request_version": (1, 0)},
        {"status": 200, "content_length": -1},
        {"status": 200, "content_length": 1.5},
        {"status": 200, "content_length": True},
    ],
)
def test_render_head_rejects_impossible_framing(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        render_head(**kwargs)


# --- simple_response --------------------------------------------------------------------------


def test_plaintext_response() -> None:
    server = prepare_headers([("Server", "parallio")])
    raw = simple_response(200, b"Hello, World!", b"text/plain", True, server)
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\nDate: [^\r\n]+\r\nContent-Type: text/plain\r\nServer: parallio\r\n"
        rb"Content-Length: 13\r\n\r\nHello, World!",
        raw,
    )
    head, body, _ = read_with_h11(raw)
    assert head.status_code == 200 and body == b"Hello, World!"


def test_simple_response_defaults_and_pairs() -> None:
    raw = simple_response(404, b"nope\n", extra_headers=[("X-Why", "gone")])
    head, body, _ = read_with_h11(raw)
    headers = dict(head.headers)
    assert head.status_code == 404 and body == b"nope\n"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"x-why"] == b"gone"
    assert headers[b"content-length"] == b"5"


def test_simple_response_without_content_type() -> None:
    raw = simple_response(200, b"{}", None)
    assert b"Content-Type" not in raw


def test_simple_response_str_content_type() -> None:
    assert b"Content-Type: application/json\r\n" in simple_response(200, b"{}", "application/json")


def test_simple_response_closing() -> None:
    raw = simple_response(400, b"bad\n", keep_alive=False)
    assert b"\r\nConnection: close\r\n" in raw
    head, body, _ = read_with_h11(raw)
    assert head.status_code == 400 and body == b"bad\n"


def test_simple_response_for_http10_keep_alive() -> None:
    raw = simple_response(200, b"ok", request_version=(1, 0))
    assert b"\r\nConnection: keep-alive\r\n" in raw
    head, body, _ = read_with_h11(raw)  # h11 only speaks 1.1 as a client
    assert body == b"ok"


def test_simple_response_head_only() -> None:
    raw = simple_response(200, b"0123456789", head_only=True)
    assert raw.endswith(b"Content-Length: 10\r\n\r\n")
    head, body, _ = read_with_h11(raw, method="HEAD")
    assert body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(status: int) -> None:
    raw = simple_response(status, b"")
    assert b"Content-Length" not in raw and b"Content-Type" not in raw
    head, body, _ = read_with_h11(raw)
    assert head.status_code == status and body == b""
    with pytest.raises(ValueError):
        simple_response(status, b"x")


def test_unknown_status_round_trips() -> None:
    head, body, _ = read_with_h11(simple_response(299, b"x"))
    assert head.status_code == 299 and head.reason == b"" and body == b"x"


def test_every_known_status_is_readable() -> None:
    for status in REASONS:
        if status < 200:
            continue
        head, _, _ = read_with_h11(simple_response(status, b"" if status in (204, 304) else b"b"))
        assert head.status_code == status
        assert head.reason == REASONS[status].encode()
