"""The benchmark suite's smoke test, ``python -m parallio.bench --quick``,
and the pieces of the suite that decide what it measures: the request heads
wrk sends, what makes a run fail, how the profiler attributes samples.

The smoke run asserts that the harness runs every scenario end to end, that
parallio (what ``auto`` picks) took part in each, and that every contender
that ran answered correctly with no errors; never a speed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from parallio.bench.__main__ import run_problems
from parallio.bench.harness import SCENARIOS
from parallio.bench.profile import KERNEL, OTHER, attribute, cost_table, parse_raw
from parallio.bench.servers import MALFORMED_HEADS, default_parallio
from parallio.bench.wrk import IDENTICAL, UNIQUE, run_wrk

ROOT = Path(__file__).resolve().parent.parent
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None,
                               reason="wrk is not installed (apt-get install wrk; "
                                      "scripts/test tries)")


@needs_wrk
@pytest.mark.long
@pytest.mark.timeout(300)
def test_quick_bench_runs_and_every_server_answers(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    completed = subprocess.run(
        [sys.executable, "-m", "parallio.bench", "--quick", "--no-install",
         "--output", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    # The suite's progress lines say which server did what.
    progress = completed.stderr[-4000:]
    assert completed.returncode == 0, progress

    [results_file] = tmp_path.glob("*.json")
    results = json.loads(results_file.read_text())
    rows = results["rows"]
    assert [row for row in rows if row["status"] == "failed"] == [], progress
    ran = [row for row in rows if row["status"] == "ok"]
    for row in ran:
        assert row["trials"], (row, progress)
        assert row["median"]["errors"] == 0, (row, progress)
        assert row["median"]["non_2xx"] == 0, (row, progress)
    # Every scenario measured asyncio (always there) and the parallio
    # combination auto picks, serving what the scenario is about.
    default = default_parallio()
    assert default is not None
    apps = {"routes": "routes", "wsgi": "wsgi"}
    for scenario in SCENARIOS:
        families = {row["family"] for row in ran if row["scenario"] == scenario}
        assert "asyncio" in families, scenario
        assert [row for row in ran if row["scenario"] == scenario and row["combo"] == default
                and row["app"] == apps.get(scenario, "fastpath")], (scenario, progress)
    # The headline heads differ per request; plain wrk's are labelled.
    per_core = [row["variant"]["heads"] for row in ran if row["scenario"] == "per_core"]
    assert UNIQUE in per_core and IDENTICAL in per_core
    # Skips say why.
    assert all(row["reason"] for row in rows if row["status"] == "skipped")
    # The strictness probe tells a strict parser from one that validates
    # nothing: parallio refuses every malformed head, the asyncio peer not.
    strictness = results["strictness"]
    assert len(strictness[f"parallio {default}"]["refused"]) == len(MALFORMED_HEADS)
    assert strictness["asyncio"]["served"]
    markdown = (tmp_path / results_file.with_suffix(".md").name).read_text()
    assert markdown.count("###") >= 11
    assert "Every request head differs" in markdown
    ids = [target["id"] for target in results["targets"]]
    # Issue 9's targets, and the access log's cost (A1).
    assert [id for id in ids if id.startswith("T")] == [f"T{n}" for n in range(1, 10)]
    assert "A1" in ids


def _row(scenario: str, family: str, status: str) -> dict:
    return dict(scenario=scenario, contender=family, family=family, app="fastpath",
                combo="", default=False, variant={}, status=status,
                reason="" if status == "ok" else "why", trials=[],
                median={"errors": 0, "non_2xx": 0})


def test_a_run_in_which_no_parallio_contender_ran_fails() -> None:
    results = {"settings": {"scenarios": ["per_core", "idle"]},
               "rows": [_row("per_core", "asyncio", "ok"), _row("per_core", "parallio", "ok"),
                        _row("idle", "asyncio", "ok"), _row("idle", "parallio", "skipped")]}
    assert run_problems(results) == ["idle: no parallio contender ran"]
    results["rows"][-1] = _row("idle", "parallio", "ok")
    assert run_problems(results) == []


class _HeadRecorder:
    """A keep-alive HTTP server on 127.0.0.1 that records every request head
    per connection and answers each with a small 200."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[list[bytes]] = []
        self.writes: list[int] = []  # requests found in each received chunk
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            heads: list[bytes] = []
            self.heads.append(heads)
            threading.Thread(target=self._serve, args=(connection, heads), daemon=True).start()

    def _serve(self, connection: socket.socket, heads: list[bytes]) -> None:
        buffer = b""
        with connection:
            while True:
                try:
                    data = connection.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                answers = 0
                while b"\r\n\r\n" in buffer:
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    heads.append(head)
                    answers += 1
                if answers:
                    self.writes.append(answers)
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * answers)


@needs_wrk
@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [1, 16])
def test_wrk_sends_a_different_realistic_head_every_time(depth: int) -> None:
    recorder = _HeadRecorder()
    try:
        result = run_wrk("wrk", f"http://127.0.0.1:{recorder.port}/plaintext", connections=2,
                         duration_s=1, depth=depth)
    finally:
        recorder.listener.close()
    assert result.requests > 100 and result.errors == 0
    every = [head for heads in recorder.heads for head in heads]
    assert len(set(every)) == len(every)  # no head repeats, on any connection
    first = every[0].split(b"\r\n")
    assert first[0] == b"GET /plaintext HTTP/1.1"
    fields = [line.partition(b":")[0] for line in first[1:]]
    assert fields == [b"Host", b"User-Agent", b"Accept", b"Accept-Language", b"Cookie",
                      b"Connection"]
    if depth > 1:
        assert max(recorder.writes) >= depth  # pipelined: a write holds a batch


@needs_wrk
@pytest.mark.timeout(60)
def test_plain_wrk_sends_identical_heads() -> None:
    recorder = _HeadRecorder()
    try:
        run_wrk("wrk", f"http://127.0.0.1:{recorder.port}/plaintext", connections=1,
                duration_s=1, heads=IDENTICAL)
    finally:
        recorder.listener.close()
    assert len({head for heads in recorder.heads for head in heads}) == 1


_RAW = """\
thread_run (libpython3.11.so.1.0);worker_main (parallio/worker.py:363);UringEngine.poll (parallio/engine/uring.py:595);syscall (libc.so.6) 30
thread_run (libpython3.11.so.1.0);worker_main (parallio/worker.py:363);UringEngine.poll (parallio/engine/uring.py:595);s_pack_into (_struct.c:1974) 10
worker_main (parallio/worker.py:363);Transport._on_data (/abs/path/parallio/transport.py:145);RequestParser.next_request (parallio/http/parser.py:627) 20
worker_main (parallio/worker.py:363);FastPath.handle_request (parallio/http/fastpath.py:99);BenchApp.json (parallio/bench/apps.py:55);dumps (json/__init__.py:231) 5
worker_main (parallio/worker.py:363);Something.new (parallio/brand_new.py:3) 5
Runtime._supervise (parallio/runtime.py:251);epoll_wait (libc.so.6) 99
"""


def test_profile_attributes_samples_by_module_path() -> None:
    layers, outside = attribute(parse_raw(_RAW.splitlines()))
    assert outside == 99  # the supervisor thread is not the worker
    assert layers == Counter({KERNEL: 30, "engine": 10, "parser": 20, "handler": 5, OTHER: 5})
    table = {row[0]: row[1] for row in cost_table(layers, user_us=4.0, system_us=6.0)}
    # Kernel time comes from /proc; the user time is split over the 40
    # samples outside system calls.
    assert table[KERNEL + ", /proc"] == "6.00"
    assert table["engine"] == "1.00" and table["parser"] == "2.00"
    assert table["handler"] == "0.50" and table[OTHER] == "0.50"
    assert table["**total** (user + system CPU, /proc)"] == "**10.00**"


def test_runs_before_unique_heads_are_not_compared_with_later_ones() -> None:
    from parallio.bench.report import comparison

    def run(heads: str | None, capacity: float) -> dict:
        rows = []
        for family, figure in (("asyncio", 100.0), ("parallio", capacity)):
            variant = {"route": "plaintext", "workers": 1}
            if heads:
                variant["heads"] = heads
            rows.append(dict(_row("per_core", family, "ok"), variant=variant,
                             median={"capacity_rps": figure, "errors": 0, "non_2xx": 0}))
        return {"rows": rows, "date": "then"}

    assert comparison(run(UNIQUE, 90.0), run(None, 80.0)) == []
    [line] = [line for line in comparison(run(UNIQUE, 90.0), run(UNIQUE, 80.0))
              if line.startswith("| per_core")]
    assert "0.80x | 0.90x | +12% better" in line
