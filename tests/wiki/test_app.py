"""The wiki server over real sockets, in every host and engine: search,
entries with byte ranges, raw offsets, the page, per-worker stats."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from parallio.wiki.app import ENTRY_SEPARATOR, REPORT_INTERVAL, Wiki, entry_pieces
from parallio.wiki.build import TEXT_NAME
from parallio.wiki.index import MAX_LIMIT

from .._http_client import Client, address_of
from ..conftest import _combos, serving
from .dictd_files import sample_text


@pytest.fixture(scope="module", params=_combos())
def server(request, sample_data):
    """The sample wiki on 2 workers, one server per host x engine."""
    wiki = Wiki(sample_data)
    wiki.prepare(workers=2)
    try:
        with serving(wiki, request.param, workers=2) as runtime:
            yield address_of(runtime), request.param
    finally:
        wiki.close()


@pytest.fixture(scope="module")
def text(sample_data) -> bytes:
    return (sample_data / TEXT_NAME).read_bytes()


def get(address, target: str, headers=(), method: str = "GET"):
    with Client(address) as client:
        return client.request(method, target, list(headers))


def search(address, query: str):
    reply = get(address, "/search?" + query)
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    return json.loads(reply.body)


def entry_document(word: str) -> bytes:
    return ENTRY_SEPARATOR.join(body.encode() for body in sample_text(word))


# -- sans-I/O: the pieces of an entry ---------------------------------------------------

def test_entry_pieces_cover_exactly_the_range():
    entries = ((100, 5), (300, 3), (500, 4))
    document = b"abcde" + ENTRY_SEPARATOR + b"fgh" + ENTRY_SEPARATOR + b"ijkl"
    text = {100 + i: byte for i, byte in enumerate(b"abcde")}
    text.update({300 + i: byte for i, byte in enumerate(b"fgh")})
    text.update({500 + i: byte for i, byte in enumerate(b"ijkl")})

    def assemble(pieces) -> bytes:
        out = b""
        for piece in pieces:
            out += piece if isinstance(piece, bytes) else bytes(
                text[offset] for offset in range(piece[0], piece[0] + piece[1]))
        return out

    for first in range(len(document)):
        for last in range(first, len(document)):
            assert assemble(entry_pieces(entries, first, last)) == document[first:last + 1]
    assert entry_pieces(entries, 0, len(document) - 1) == [
        (100, 5), ENTRY_SEPARATOR, (300, 3), ENTRY_SEPARATOR, (500, 4)]
    assert entry_pieces(((7, 0),), 0, -1) == []


# -- over sockets, in every host --------------------------------------------------------

def test_page(server):
    address, _combo = server
    reply = get(address, "/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>Sample Dictionary of Tests</title>" in reply.body
    assert b'<input id="q"' in reply.body and b'fetch("/search?' in reply.body


def test_search(server):
    address, _combo = server
    found = search(address, "q=AP")
    assert found["q"] == "AP" and found["more"] is False
    assert [result["headword"] for result in found["results"]] == [
        "Apple", "application", "apricot"]
    assert len(found["results"][0]["entries"]) == 2
    assert all(len(pair) == 2 for result in found["results"] for pair in result["entries"])
    assert [r["headword"] for r in search(address, "q=" + quote("É"))["results"]] == ["\u00c9cole"]
    assert [r["headword"] for r in search(address, "q=" + quote("STRASSE"))["results"]] == [
        "Straße"]
    assert search(address, "q=zzz") == {"q": "zzz", "more": False, "results": []}


def test_search_limits(server):
    address, _combo = server
    everything = search(address, "q=&limit=100")
    assert len(everything["results"]) == 14 and not everything["more"]
    first = search(address, "q=")
    assert first["results"] == everything["results"][:10] and first["more"]
    assert len(search(address, f"q=a&limit={MAX_LIMIT}")["results"]) == 4
    assert search(address, "q=a&limit=1")["more"] is True
    for limit in ("0", str(MAX_LIMIT + 1), "-1", "ten", "1e3", "9" * 30):
        reply = get(address, f"/search?q=a&limit={limit}")
        assert reply.status == 400, limit
        assert b"limit must be a whole number" in reply.body
    assert get(address, "/search").status == 400  # q is required


def test_entry(server, text):
    address, _combo = server
    reply = get(address, "/entry/APPLE")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["accept-ranges"] == "bytes"
    assert reply.body == entry_document("apple") and reply.body.count(b"Apple") == 2
    for word in ("and/or", "日本", "Café", "cafe\u0301", "strasse", "bank"):
        reply = get(address, "/entry/" + quote(word, safe=""))
        assert (reply.status, reply.body) == (200, entry_document(word)), word
    for missing in ("appl", "apples", "nothing", quote("日", safe="")):
        assert get(address, "/entry/" + missing).status == 404
    head = get(address, "/entry/apple", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(entry_document("apple"))


def test_entry_ranges(server):
    address, _combo = server
    document = entry_document("apple")
    size = len(document)
    split = len(sample_text("apple")[0].encode())
    etag = get(address, "/entry/apple").headers["etag"]
    for spec, first, last in [("0-0", 0, 0), ("5-9", 5, 9), (f"{split - 2}-{split + 3}", split - 2,
                              split + 3), ("-7", size - 7, size - 1), ("10-", 10, size - 1),
                              (f"0-{size + 100}", 0, size - 1)]:
        reply = get(address, "/entry/apple", [("Range", f"bytes={spec}")])
        assert reply.status == 206, spec
        assert reply.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert reply.body == document[first:last + 1], spec
    unsatisfiable = get(address, "/entry/apple", [("Range", f"bytes={size}-")])
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    several = get(address, "/entry/apple", [("Range", "bytes=0-1,5-6")])
    assert (several.status, several.body) == (200, document)
    assert get(address, "/entry/apple", [("Range", "bytes=0-3"), ("If-Range", etag)]).status == 206
    stale = get(address, "/entry/apple", [("Range", "bytes=0-3"), ("If-Range", '"other"')])
    assert (stale.status, stale.body) == (200, document)


def test_offsets(server, text):
    address, _combo = server
    size = len(text)
    for start, length in [(0, 10), (size - 5, 5), (17, 0), (0, size)]:
        reply = get(address, f"/offsets/{start}/{length}")
        assert reply.status == 200, (start, length)
        assert reply.body == text[start:start + length]
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    for start, length in [(size, 1), (size - 5, 6), (0, size + 1), ("x", 1), (1, "-1"),
                          ("9" * 40, 1)]:
        assert get(address, f"/offsets/{start}/{length}").status == 404, (start, length)


def test_stats_has_every_workers_counters(server):
    address, (host, engine) = server
    time.sleep(REPORT_INTERVAL * 1.5)  # every report is up to date after the tests before
    before = json.loads(get(address, "/stats").body)["totals"]
    searches = 12
    for _ in range(searches):  # a connection each: the kernel spreads them
        search(address, "q=b")
    assert get(address, "/entry/zzz").status == 404
    deadline = time.monotonic() + 10
    while True:
        reply = get(address, "/stats")
        stats = json.loads(reply.body)
        totals = stats["totals"]
        if totals["searches"] - before["searches"] >= searches or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.headers["content-type"] == "application/json"
    assert [worker["worker"] for worker in stats["workers"]] == [1, 2]
    assert totals["searches"] - before["searches"] == searches
    assert totals["not_found"] - before["not_found"] >= 1
    assert stats["index"]["headwords"] == 14 and stats["index"]["title"]
    assert "parallio_workers 2" in stats["prometheus"]
    assert f'host="{host}"' in stats["prometheus"]

