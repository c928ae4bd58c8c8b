"""Static files on real sockets in every host and engine: sendfile, ranges,
conditional requests, directories, and paths that try to leave the root."""

from __future__ import annotations

import email.utils
import os

import pytest
from hypothesis import given, settings, strategies as st

from parallio.http.server import FileServer
from parallio.http.static import MAX_RANGES, StaticFiles, content_type, parse_byte_ranges

from ._http_client import Client, address_of, encode_request
from .conftest import serving
from .test_cli import start_cli, stop

PAYLOAD = bytes(range(256)) * 16  # 4 KiB


@pytest.fixture
def site(tmp_path):
    """A root with files, a directory with an index, one without, symlinks
    in and out of the root, and a FIFO; and a secret outside the root."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    (root / "page.html").write_text("<p>page</p>")
    (root / "empty.txt").write_bytes(b"")
    (root / "sp ace & <amp>.txt").write_text("spaced")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("<p>docs index</p>")
    (root / "docs" / "note.txt").write_text("note")
    (root / "listed").mkdir()
    (root / "listed" / "<script>.txt").write_text("x")
    (root / "listed" / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "also-secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(tmp_path / "outside", root / "dir-out")
    os.symlink(root / "page.html", root / "link-in.txt")
    os.mkfifo(root / "fifo")
    return root


def served(root, combo, listing=False):
    return serving(FileServer(root, listing=listing, header_timeout=0.5, idle_timeout=1.0), combo)


def test_files_types_and_validators(combo, site):
    with served(site, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/data.bin")
        assert reply.status == 200 and reply.body == PAYLOAD
        assert reply.headers["content-type"] == "application/octet-stream"
        assert reply.headers["accept-ranges"] == "bytes"
        info = os.stat(site / "data.bin")
        assert reply.headers["etag"] == '"%x-%x-%x"' % (info.st_mtime_ns, info.st_size, info.st_ino)
        assert reply.headers["last-modified"] == email.utils.formatdate(info.st_mtime, usegmt=True)
        assert client.get("/page.html").headers["content-type"] == "text/html; charset=utf-8"
        # A symlink inside the root: served, typed by the name asked for.
        reply = client.get("/link-in.txt")
        assert reply.body == b"<p>page</p>" and reply.headers["content-type"].startswith("text/plain")
        reply = client.get("/empty.txt")
        assert reply.status == 200 and reply.headers["content-length"] == "0"
        assert client.get("/sp%20ace%20%26%20%3Camp%3E.txt").body == b"spaced"
        reply = client.request("HEAD", "/data.bin")
        assert reply.headers["content-length"] == str(len(PAYLOAD)) and not reply.body
        assert client.request("POST", "/data.bin", body=b"x").status == 405


def test_conditional_requests(combo, site):
    with served(site, combo) as runtime, Client(address_of(runtime)) as client:
        first = client.get("/data.bin")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        for headers in ([("If-None-Match", etag)], [("If-None-Match", f'"other", W/{etag}')],
                        [("If-None-Match", "*")], [("If-Modified-Since", modified)]):
            reply = client.get("/data.bin", headers)
            assert reply.status == 304 and not reply.body, headers
            assert reply.headers["etag"] == etag and "content-length" not in reply.headers
        for headers in ([("If-None-Match", '"other"')],
                        # If-None-Match wins over If-Modified-Since.
                        [("If-None-Match", '"other"'), ("If-Modified-Since", modified)],
                        [("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                        [("If-Modified-Since", "not a date")],
                        [("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")]):
            assert client.get("/data.bin", headers).status == 200, headers


def test_byte_ranges(combo, site):
    size = len(PAYLOAD)
    with served(site, combo) as runtime, Client(address_of(runtime)) as client:
        cases = {"bytes=0-9": (0, 9), "bytes=100-": (100, size - 1), "bytes=-16": (size - 16, size - 1),
                 f"bytes=4000-{10 ** 30}": (4000, size - 1), "bytes=0-0, 1-5": (0, 5),
                 "BYTES=5-10,8-20": (5, 20), "bytes=-99999": (0, size - 1),
                 "bytes=-00000000000000000009": (size - 9, size - 1)}
        for value, (first, last) in cases.items():
            reply = client.get("/data.bin", [("Range", value)])
            assert reply.status == 206, value
            assert reply.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert reply.body == PAYLOAD[first:last + 1]
        for value in (f"bytes={size}-", "bytes=-0", f"bytes={size + 5}-{size + 9}"):
            reply = client.get("/data.bin", [("Range", value)])
            assert reply.status == 416 and reply.headers["content-range"] == f"bytes */{size}"
        assert client.get("/empty.txt", [("Range", "bytes=0-")]).status == 416
        # Refused by ignoring the header: several disjoint ranges, bad syntax,
        # other units, too many specs. The whole file, 200.
        for value in ("bytes=0-1,5-6", "bytes=5-1", "bytes=a-b", "items=0-1", "bytes=",
                      "bytes=1", ",".join(["bytes=0-0"] + ["2-2"] * MAX_RANGES)):
            reply = client.get("/data.bin", [("Range", value)])
            assert reply.status == 200 and reply.body == PAYLOAD, value
        # If-Range: a matching strong validator keeps the range.
        etag = client.get("/data.bin").headers["etag"]
        modified = client.get("/data.bin").headers["last-modified"]
        for if_range, status in ((etag, 206), (modified, 206), ('"stale"', 200), (f"W/{etag}", 200)):
            reply = client.get("/data.bin", [("Range", "bytes=0-3"), ("If-Range", if_range)])
            assert reply.status == status, if_range
        # HEAD ignores Range (RFC 9110 §14.2: GET only).
        assert client.request("HEAD", "/data.bin", [("Range", "bytes=0-3")]).status == 200


def test_ranges_past_2_gib(combo, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    size = 3 * 1024 ** 3 + 17
    with open(root / "sparse.bin", "wb") as file:
        file.truncate(size)
        file.seek(size - 5)
        file.write(b"tail!")
    with served(root, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.request("HEAD", "/sparse.bin")
        assert reply.headers["content-length"] == str(size)
        first = size - 1000
        reply = client.get("/sparse.bin", [("Range", f"bytes={first}-")])
        assert reply.status == 206
        assert reply.headers["content-range"] == f"bytes {first}-{size - 1}/{size}"
        assert reply.body == bytes(995) + b"tail!"
        offset = 2 ** 31 + 10
        reply = client.get("/sparse.bin", [("Range", f"bytes={offset}-{offset + 65535}")])
        assert reply.status == 206 and reply.body == bytes(65536)


def test_directories(combo, site):
    with served(site, combo) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/docs?x=1")
        assert reply.status == 301 and reply.headers["location"] == "/docs/?x=1"
        assert client.get("/docs/").body == b"<p>docs index</p>"
        assert client.get("/docs/note.txt").body == b"note"
        assert client.get("/listed/").status == 403  # listing is opt-in
        assert client.get("/").status == 403
    with served(site, combo, listing=True) as runtime, Client(address_of(runtime)) as client:
        reply = client.get("/listed/")
        assert reply.status == 200 and reply.headers["content-type"] == "text/html; charset=utf-8"
        page = reply.body.decode()
        assert '<a href="%3Cscript%3E.txt">&lt;script&gt;.txt</a>' in page
        assert '<a href="sub/">sub/</a>' in page and "<script>" not in page
        assert client.get("/listed/sub").status == 301


@pytest.mark.parametrize("target, status", [
    ("/../secret.txt", 404),
    ("/docs/../../secret.txt", 404),
    ("/%2e%2e/secret.txt", 404),
    ("/%2E%2E/%2e%2e/secret.txt", 404),
    ("/docs/%2e%2e%2f%2e%2e%2fsecret.txt", 404),
    ("/%252e%252e/secret.txt", 404),
    ("/link-out.txt", 404),
    ("/dir-out/also-secret.txt", 404),
    ("/dir-out/", 404),
    ("/data.bin%00.html", 400),
    ("/%00", 400),
    ("//etc/passwd", 404),
    ("/fifo", 404),
    ("/data.bin/", 404),
    ("/nothing-here", 404),
    ("http://evil.example/../secret.txt", 404),
])
def test_paths_never_leave_the_root(site, target, status):
    with served(site, ("threads", "epoll")) as runtime, Client(address_of(runtime)) as client:
        client.send(encode_request("GET", target))
        reply = client.read()
        assert reply.status == status, target
        assert b"secret" not in reply.body
        assert client.get("/data.bin").body == PAYLOAD  # and the server goes on


def test_escapes_refused_in_every_host(combo, site):
    with served(site, combo) as runtime, Client(address_of(runtime)) as client:
        for target in ("/%2e%2e/secret.txt", "/link-out.txt", "/dir-out/also-secret.txt"):
            assert client.get(target).status == 404
        assert client.get("/%00").status == 400


def test_concurrent_connections_get_whole_files(combo, tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 123)
    (root / "big.bin").write_bytes(payload)
    with served(root, combo) as runtime:
        clients = [Client(address_of(runtime), timeout=20) for _ in range(4)]
        try:
            for client in clients:
                client.send(encode_request("GET", "/big.bin") * 2)
            for client in clients:
                for _ in range(2):
                    assert client.read().body == payload
        finally:
            for client in clients:
                client.sock.close()


# -- without sockets ------------------------------------------------------------------

def test_mount_checks_its_arguments(tmp_path):
    with pytest.raises(NotADirectoryError):
        StaticFiles(tmp_path / "missing")
    with pytest.raises(ValueError):
        StaticFiles(tmp_path, "relative/")
    with pytest.raises(ValueError):
        StaticFiles(tmp_path, index=["../x"])


def test_content_types():
    assert content_type("a.HTML") == "text/html; charset=utf-8"
    assert content_type("a.png") == "image/png"
    assert content_type("a.tar.gz") == "application/gzip"
    assert content_type("Makefile") == "application/octet-stream"


@pytest.mark.parametrize("value, size, expected", [
    # Leading zeros are no magnitude (a 20-digit suffix of 9 used to mean the whole file).
    ("bytes=-00000000000000000009", 100, [(91, 99)]),
    ("bytes=00000000000000000000000090-", 100, [(90, 99)]),
    ("bytes=0-000000000000000000000000009", 100, [(0, 9)]),
    ("bytes=" + "0" * 60 + "50-" + "0" * 60 + "60", 100, [(50, 60)]),
    (f"bytes=-{'0' * 5000}1", 100, [(99, 99)]),
    ("bytes=-00000000000000000000000", 100, []),
    # Past 19 digits (no file is that large), numbers still compare exactly.
    (f"bytes={'2' * 30}-{'1' * 30}", 100, None),
    (f"bytes={10 ** 25}-{10 ** 25 + 1}", 100, []),
    (f"bytes=0-{'9' * 40}", 100, [(0, 99)]),
    # More than 40 significant digits: refused without converting them.
    (f"bytes=0-{'9' * 41}", 100, None),
    (f"bytes={'1' * 41}-", 100, None),
    (f"bytes=-{'9' * 100_000}", 100, None),
])
def test_range_numbers_are_exact(value, size, expected):
    assert parse_byte_ranges(value, size) == expected


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 10 ** 12), specs=st.lists(st.tuples(
    st.one_of(st.none(), st.integers(0, 10 ** 13)), st.one_of(st.none(), st.integers(0, 10 ** 13))),
    min_size=1, max_size=MAX_RANGES))
def test_parsed_ranges_are_satisfiable_sorted_and_disjoint(size, specs):
    text = "bytes=" + ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs)
    ranges = parse_byte_ranges(text, size)
    valid = all((a is not None and (b is None or b >= a)) or (a is None and b is not None)
                for a, b in specs)
    if not valid:
        assert ranges is None
        return
    assert ranges is not None
    for first, last in ranges:
        assert 0 <= first <= last < size
    for (_, last), (first, _) in zip(ranges, ranges[1:]):
        assert first > last + 1  # merged: neither overlapping nor touching
    covered = set()
    for first, last in ranges:
        covered.add((first, last))
    # Every byte a spec asked for (and the file has) is in some range.
    for a, b in specs:
        first, last = (max(0, size - b), size - 1) if a is None else (a, min(b if b is not None else size - 1, size - 1))
        if first <= last and first < size and not (a is None and b == 0):
            assert any(f <= first and last <= l for f, l in ranges), (a, b, ranges)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_range_header_parses_or_is_ignored(value):
    ranges = parse_byte_ranges(value, 1000)
    assert ranges is None or all(0 <= a <= b < 1000 for a, b in ranges)


def test_http_server_command(tmp_path):
    (tmp_path / "hello.txt").write_text("hi")
    process, port = start_cli("http-server", str(tmp_path), "--workers", "2", "--io", "epoll")
    try:
        with Client(("127.0.0.1", port)) as client:
            assert client.get("/hello.txt").body == b"hi"
            reply = client.get("/")  # listed, like python -m http.server
            assert reply.status == 200 and b'href="hello.txt"' in reply.body
    finally:
        code, err = stop(process)
    assert code == 0, err
    process, port = start_cli("http-server", str(tmp_path), "--no-listing", "--workers", "1")
    try:
        with Client(("127.0.0.1", port)) as client:
            assert client.get("/").status == 403
    finally:
        stop(process)
