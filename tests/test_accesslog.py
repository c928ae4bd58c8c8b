"""The access log: gunicorn's format atoms and JSON, one line per response
from every HTTP front (the fast path, HttpServer and its static files,
WSGI, ASGI), written in batches by each worker -- checked with curl against
real servers, and the formatting on its own."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from parallio import Runtime, protocol_ref
from parallio.http import accesslog
from parallio.http.accesslog import AccessLog, AccessLogConfig, compile_format
from parallio.http.parser import Headers
from parallio.runtime import make_server

from .test_cli import ROOT, start_server_process, stop

PYTHON = [sys.executable, "-m", "parallio"]


# -- formats ------------------------------------------------------------------------

def _entry(headers=(), status=200, sent=13, target="/hello?x=1", start=1764573940.25,
           seconds=0.0123, method="GET"):
    return (("10.1.2.3", 5555), method, target, (1, 1), Headers(list(headers)), status, sent,
            start, seconds)


def test_the_combined_format_as_gunicorn_writes_it():
    render = compile_format(accesslog.GUNICORN, worker=2, pid=77)
    line = render(_entry([("referer", "http://a/"), ("user-agent", "curl/8")]))
    assert re.fullmatch(r'10\.1\.2\.3 - - \[\d\d/Dec/2025:\d\d:\d\d:40 [+-]\d{4}\] '
                        r'"GET /hello\?x=1 HTTP/1\.1" 200 13 "http://a/" "curl/8"', line), line


def test_every_atom():
    fmt = ("%(h)s|%(l)s|%(u)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|"
           "%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%(w)s|%({x-trace}i)s|%({PARALLIO_TEST_ATOM}e)s")
    os.environ["PARALLIO_TEST_ATOM"] = "from-env"
    try:
        render = compile_format(fmt, worker=3, pid=42)
    finally:
        del os.environ["PARALLIO_TEST_ATOM"]
    auth = "Basic " + base64.b64encode(b"alice:secret").decode()
    line = render(_entry([("authorization", auth), ("x-trace", "abc")], sent=0, seconds=1.5))
    assert line.split("|") == [
        "10.1.2.3", "-", "alice", "GET /hello?x=1 HTTP/1.1", "GET", "/hello", "x=1", "HTTP/1.1",
        "200", "0", "-", "-", "-", "1", "1500", "1500000", "1.500000", "<42>", "3", "abc",
        "from-env"]


def test_request_values_cannot_forge_a_line():
    render = compile_format(accesslog.COMBINED)
    line = render(_entry([("user-agent", 'x" 200 9 "\x1b[31m\\'), ("referer", "r\xe9f")]))
    assert line.endswith(r'"-" "x\x22 200 9 \x22\x1b[31m\x5c"'.replace('"-"', r'"r\xc3\xa9f"'))
    assert "\n" not in line and "\x1b" not in line


def test_json_lines():
    render = compile_format("json", worker=1, pid=9)
    record = json.loads(render(_entry([("user-agent", 'quote " me')], status=404, sent=5)))
    assert record["remote"] == "10.1.2.3" and record["status"] == 404 and record["bytes"] == 5
    assert record["method"] == "GET" and record["target"] == "/hello?x=1"
    assert record["protocol"] == "HTTP/1.1" and record["user_agent"] == 'quote " me'
    assert record["referer"] is None and record["worker"] == 1 and record["pid"] == 9
    assert record["duration_ms"] == pytest.approx(12.3)
    assert re.fullmatch(r"2025-12-0\dT\d\d:\d\d:40\.250[+-]\d\d:\d\d", record["time"])


def test_a_request_that_never_parsed_and_an_unknown_status():
    render = compile_format(accesslog.COMMON)
    line = render((("1.2.3.4", 1), None, None, None, None, 0, 0, 0.0, 0.0))
    assert line.endswith('"-" - -')


@pytest.mark.parametrize("fmt, complaint", [
    ("%(nope)s", "unknown atom %(nope)s"),
    ("%({content-type}o)s", "response headers"),
    ("%(h)d", "format requires a mapping"),
    ("100%", "format"),
])
def test_formats_it_cannot_write_are_refused(fmt, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        compile_format(fmt)


def test_batches_on_a_pipe_are_cut_at_line_ends():
    data = b"".join(b"%05d " % i + b"x" * (i % 300) + b"\n" for i in range(200))
    pieces = accesslog._pieces(data)
    assert b"".join(pieces) == data
    assert all(len(piece) <= accesslog._PIPE_BUF and piece.endswith(b"\n") for piece in pieces)


class _Timers:
    def __init__(self):
        self.calls = []

    def call_later(self, delay, callback, *args):
        timer = _Timer(callback)
        self.calls.append((delay, timer))
        return timer


class _Timer:
    def __init__(self, callback):
        self.callback = callback
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def _request(target="/"):
    from parallio.http.parser import RequestParser
    parser = RequestParser()
    parser.feed(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return parser.next_request()


def test_lines_are_written_by_batch_by_timer_and_when_the_last_connection_closes(tmp_path):
    path = tmp_path / "access.log"
    timers = _Timers()
    log = AccessLog(AccessLogConfig(str(path), "%(r)s %(s)s"), timers.call_later, worker=1)
    log.opened()
    log.record(("1.1.1.1", 1), _request("/a"), 200, 1, time.time())
    assert path.read_text() == ""  # nothing on the request's path
    assert len(timers.calls) == 1 and timers.calls[0][0] == accesslog.FLUSH_INTERVAL
    timers.calls[0][1].callback()
    assert path.read_text() == "GET /a HTTP/1.1 200\n"
    for index in range(accesslog.BATCH):
        log.record(("1.1.1.1", 1), _request(f"/{index}"), 204, 0, time.time())
    assert len(path.read_text().splitlines()) == 1 + accesslog.BATCH  # a full batch went out
    log.record(("1.1.1.1", 1), _request("/last"), 404, 9, time.time())
    log.closed()
    assert path.read_text().splitlines()[-1] == "GET /last HTTP/1.1 404"
    assert timers.calls[-1][1].cancelled


# -- every front, for real ----------------------------------------------------------

def _curl(url: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *options, url],
                          capture_output=True, text=True, timeout=30)


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_for_lines(path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(_lines(path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _lines(path)


@pytest.mark.parametrize("parallel", ["threads", "processes"])
def test_fast_path_lines_from_each_worker(tmp_path, parallel):
    log_path = tmp_path / "access.log"
    process, port, _ = start_server_process(
        [*PYTHON, "serve", "tests._ops_apps:FastPath", "--port", "0", "--workers", "2",
         "--parallel", parallel, "--access-log", str(log_path),
         "--access-log-format", "%(w)s %(m)s %(U)s %(s)s %(b)s %(a)s"])
    try:
        base = f"http://127.0.0.1:{port}"
        assert _curl(f"{base}/hello", "-A", "tester").stdout == "200"
        assert _curl(f"{base}/missing").stdout == "404"
        assert _curl(f"{base}/hello", "-X", "POST").stdout == "405"
        assert _curl(f"{base}/raw").stdout == "202"
        assert _curl(f"{base}/told").stdout == "203"
        assert _curl(f"{base}/hello", "-I").stdout == "200"
        # Written within about a second, while the server keeps running.
        lines = _wait_for_lines(log_path, 6)
    finally:
        code, err = stop(process)
    assert code == 0, err
    entries = [line.split(" ", 1) for line in lines]
    assert all(worker in ("1", "2") for worker, _ in entries), lines
    assert [rest for _, rest in entries] == [
        "GET /hello 200 13 tester", "GET /missing 404 10 curl/" + _curl_version(),
        "POST /hello 405 19 curl/" + _curl_version(), "GET /raw - - curl/" + _curl_version(),
        "GET /told 203 4 curl/" + _curl_version(), "HEAD /hello 200 - curl/" + _curl_version()]


def _curl_version() -> str:
    return subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]


def test_http_server_routes_streams_errors_and_static_files(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "page.txt").write_bytes(b"0123456789" * 10)
    log_path = tmp_path / "access.log"
    from parallio.http import FileServer
    accesslog.configure(str(log_path), "%(r)s %(s)s %(B)s")
    try:
        files = make_server("127.0.0.1", 0)
        files.protocol = protocol_ref(FileServer(str(tmp_path / "www")))
        routes = make_server("127.0.0.1", 0)
        routes.protocol = protocol_ref("tests._ops_apps:app")
        with Runtime([files, routes], workers=1, parallel="threads", io="epoll"):
            base = f"http://127.0.0.1:{files.port}"
            assert _curl(f"{base}/page.txt").stdout == "200"
            assert _curl(f"{base}/page.txt", "-r", "10-19").stdout == "206"
            assert _curl(f"{base}/page.txt", "-H", "If-None-Match: *").stdout == "304"
            assert _curl(f"{base}/").stdout == "403"  # a directory, and no listing
            assert _curl(f"{base}/nope").stdout == "404"
            base = f"http://127.0.0.1:{routes.port}"
            assert _curl(f"{base}/hello").stdout == "200"
            assert _curl(f"{base}/stream").stdout == "201"
            assert _curl(f"{base}/boom").stdout == "500"
            assert _curl(f"{base}/hello", "-X", "OPTIONS").stdout == "204"
    finally:
        accesslog.configure(None)
    lines = _lines(log_path)
    assert lines[:5] == ["GET /page.txt HTTP/1.1 200 100", "GET /page.txt HTTP/1.1 206 10",
                         "GET /page.txt HTTP/1.1 304 0", "GET / HTTP/1.1 403 14",
                         "GET /nope HTTP/1.1 404 14"]
    assert lines[5:] == ["GET /hello HTTP/1.1 200 8", "GET /stream HTTP/1.1 201 1500",
                         "GET /boom HTTP/1.1 500 22", "OPTIONS /hello HTTP/1.1 204 0"]


def _start(command: list[str], serving: str, **popen) -> tuple[subprocess.Popen, int]:
    """Start ``command``; return it and the port its log line containing
    ``serving`` names."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=ROOT), **popen)
    line = process.stderr.readline()
    while serving not in line:
        assert line, "the server did not start"
        line = process.stderr.readline()
    return process, int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))


def test_wsgi_json_lines_to_standard_output(tmp_path):
    process, port = _start(
        [*PYTHON, "wsgi", "tests._ops_apps:wsgi_app", "--port", "0", "--workers", "1",
         "--access-log", "--access-log-format", "json"], "serving", stdout=subprocess.PIPE)
    try:
        assert _curl(f"http://127.0.0.1:{port}/x?y=1").stdout == "200"
        assert _curl(f"http://127.0.0.1:{port}/fail").stdout == "500"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["target"], r["status"]) for r in records] == [("/x?y=1", 200), ("/fail", 500)]
    assert records[0]["bytes"] == len("wsgi GET 127.0.0.1") and records[0]["remote"] == "127.0.0.1"


def test_asgi_lines(tmp_path):
    log_path = tmp_path / "access.log"
    process, port = _start(
        [*PYTHON, "asgi", "tests._ops_apps:asgi_app", "--port", "0", "--workers", "2",
         "--access-log", str(log_path), "--access-log-format", "%(w)s %(r)s %(s)s %(b)s"],
        "serving on")
    try:
        for _ in range(4):
            assert _curl(f"http://127.0.0.1:{port}/a").stdout == "200"
        lines = _wait_for_lines(log_path, 4)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert [line.split(" ", 1)[1] for line in lines] == ["GET /a HTTP/1.1 200 12"] * 4
    assert {line.split()[0] for line in lines} <= {"1", "2"}


def test_an_access_log_that_cannot_be_opened_is_an_error_before_serving(tmp_path):
    result = subprocess.run(
        [*PYTHON, "serve", "tests._ops_apps:FastPath", "--port", "0",
         "--access-log", str(tmp_path / "no" / "such" / "dir.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    assert "access log" in result.stderr and "No such file or directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
