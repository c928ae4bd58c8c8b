"""Parser defects the fuzzers (tests/fuzz) found, kept as regression tests:
the same bytes get the same status however they arrive, and an empty
target is a malformed request line whatever its version."""

from __future__ import annotations

from parallio.http.parser import HttpError, RequestParser


def refusal_status(pieces: list[bytes]) -> int | None:
    parser = RequestParser()
    try:
        for piece in pieces:
            parser.feed(piece)
            while parser.next_request() is not None:
                pass
    except HttpError as error:
        return error.status
    return None


def test_request_line_judged_early_or_with_the_head_gives_one_status() -> None:
    # The request line is judged first either way (HTTP/1.2: 505), before
    # the fields' bytes (0x01).
    data = b"GET / HTTP/1.2\r\nX: \x01\r\n\r\n"
    line = data.index(b"\r\n") + 2
    assert refusal_status([data]) == refusal_status([data[:line], data[line:]])


def test_bare_lf_spotted_early_or_with_the_head_gives_one_status() -> None:
    # The bare LF is refused (400) before the size (431) either way.
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: y\n"
    rest = b"z" * (64 * 1024) + b"\r\n\r\n"
    assert refusal_status([start + rest]) == refusal_status([start, rest])


def test_bare_lf_in_trailers_spotted_early_or_late_gives_one_status() -> None:
    # The same in a trailer section.
    start = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\nX: y\n")
    rest = b"z" * (64 * 1024) + b"\r\n\r\n"
    assert refusal_status([start + rest]) == refusal_status([start, rest])


def test_empty_target_with_an_unsupported_version_is_a_malformed_line() -> None:
    assert refusal_status([b"GET  HTTP/1.1\r\nHost: h\r\n\r\n"]) == 400
    assert refusal_status([b"GET  HTTP/1.2\r\nHost: h\r\n\r\n"]) == 400
