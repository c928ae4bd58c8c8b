"""share/shared, protect/protected, parallio.dict/list in every host, and
what a 200 MB shared buffer costs."""

from __future__ import annotations

import array
import json
import os
import pickle
import subprocess
import sys

import pytest

import parallio
from parallio.host import InterpretersHost

from . import _funcs
from ._funcs import RESULTS

pytestmark = pytest.mark.timeout(20)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def no_shares():
    yield
    from parallio.services import shared
    for name in list(shared._shares):
        parallio.unshare(name)


def test_buffers_reach_every_worker_as_read_only_views(host_io):
    host, io = host_io
    parallio.share("bytes", b"hello world")
    parallio.share("bytearray", bytearray(b"abc"))
    parallio.share("doubles", array.array("d", [1.5, 2.5, 3.5, 4.5]))
    parallio.share("view", memoryview(b"0123456789")[2:6])
    parallio.share("empty", b"")
    for name in ("bytes", "bytearray", "doubles", "view", "empty"):
        parallio.submit_work(_funcs.read_shared, (name,))
    parallio.run(workers=2, parallel=host, io=io)
    seen = {name: (kind, value) for name, kind, value, _where in RESULTS}
    assert seen["bytes"] == ("SharedBuffer", (b"hello world", "B", [104, 101, 108]))
    assert seen["bytearray"] == ("SharedBuffer", (b"abc", "B", [97, 98, 99]))
    assert seen["doubles"] == ("SharedBuffer", (array.array("d", [1.5, 2.5, 3.5, 4.5]).tobytes(),
                                                "d", [1.5, 2.5, 3.5]))
    assert seen["view"] == ("SharedBuffer", (b"2345", "B", [50, 51, 52]))
    assert seen["empty"] == ("SharedBuffer", (b"", "B", []))


def test_other_objects_reach_every_worker_read_only(host):
    config = {"name": "cfg", "list": [1, 2, 3], "nested": {"set": {1, 2}}, "tuple": (1, [2])}
    parallio.share("config", config)
    parallio.share("items", [1, "two", 3.0])
    parallio.submit_work(_funcs.read_shared, ("config",))
    parallio.submit_work(_funcs.read_shared, ("items",))
    parallio.run(workers=1, parallel=host, io="epoll")
    seen = {name: (kind, value) for name, kind, value, _where in RESULTS}
    assert seen["config"] == ("ReadOnlyDict", config)  # .copy() is a private deep copy
    assert seen["items"] == ("ReadOnlyList", [1, "two", 3.0])
    assert parallio.shared("config") is config  # the main thread has the original


def test_buffers_inside_objects_stay_out_of_band(host):
    """What pickles out of band (NumPy arrays do) is not copied per worker:
    it stays in the memfd, and the worker reads it there."""
    blob = bytes(range(256)) * 64
    parallio.share("frame", {"columns": ["a"], "data": pickle.PickleBuffer(blob)})
    parallio.submit_work(_funcs.read_out_of_band, ("frame",))
    parallio.run(workers=1, parallel=host, io="epoll")
    assert RESULTS == [("out of band", "SharedBuffer", len(blob), blob[:8])]


@pytest.mark.parametrize("name, value, how, error", [
    ("buffer", b"abc", "setitem", "AssignmentError"),
    ("buffer", b"abc", "view", "TypeError"),  # through a memoryview: Python's own error
    ("config", {"list": [1]}, "setitem", "AssignmentError"),
    ("config", {"list": [1]}, "nested_append", "AssignmentError"),
    ("config", {"list": [1]}, "update", "AssignmentError"),
    ("items", [1, 2], "append", "AssignmentError"),
    ("object", _funcs.Config(), "setattr", "AssignmentError"),
])
def test_writes_to_shared_data_raise(host, name, value, how, error):
    parallio.share(name, value)
    parallio.submit_work(_funcs.write_shared, (name, how))
    parallio.run(workers=1, parallel=host, io="epoll")
    [(raised, message)] = RESULTS
    assert raised == error
    if error == "AssignmentError":
        assert "parallio.dict()" in message and "call_from_main_thread" in message


def test_an_unknown_share_is_a_key_error(host):
    parallio.share("known", b"x")
    parallio.submit_work(_funcs.read_shared, ("unknown",), errback=_funcs.record_error)
    parallio.run(workers=1, parallel=host, io="epoll")
    [(tag, type_name, message, _where)] = RESULTS
    assert (tag, type_name) == ("errback", "KeyError")
    assert "'known'" in message and "before run()" in message


def test_share_rules():
    parallio.share("blob", bytearray(b"abc"))
    blob = parallio.shared("blob")  # the main thread reads the one copy, too
    assert isinstance(blob, parallio.SharedBuffer) and bytes(blob) == b"abc"
    with pytest.raises(parallio.AssignmentError):
        blob[0] = 1
    with pytest.raises(TypeError, match="cannot be copied"):
        parallio.share("lambda", lambda: 1)
    with pytest.raises(KeyError):
        parallio.shared("missing")
    with pytest.raises(KeyError):
        parallio.unshare("missing")
    endpoint = parallio.server("127.0.0.1", 0)
    parallio.register(endpoint, _funcs.Echo)
    runtime = parallio.start(workers=1, parallel="threads", io="epoll")
    try:
        with pytest.raises(RuntimeError, match="before run"):
            parallio.share("late", b"x")
    finally:
        runtime.stop()


def test_protected_containers_are_the_main_threads(host_io):
    host, io = host_io
    for index in range(4):
        parallio.submit_work(_funcs.use_protected, (index,))
    parallio.run(workers=2, parallel=host, io=io)
    assert _funcs.HITS["total"] == 4
    assert sorted(_funcs.ITEMS) == [0, 1, 2, 3]
    assert {key for key in _funcs.HITS if key.startswith("worker-")} == {
        f"worker-{index}" for index in range(4)}
    assert {(seen, has_total) for _tag, seen, has_total, _kind in RESULTS} == {(True, True)}
    kinds = {kind for _tag, _seen, _has_total, kind in RESULTS}
    assert kinds == {"Protected" if host == "threads" else "RemoteProtected"}


def test_values_read_from_protected_objects_are_read_only(host):
    parallio.submit_work(_funcs.protected_read_only_values)
    parallio.run(workers=1, parallel=host, io="epoll")
    assert RESULTS == [("read-only value", [1, 2], ["list"])]
    assert _funcs.HITS["list"] == [1, 2]


def test_workers_cannot_make_protected_objects(host):
    parallio.submit_work(_funcs.make_protected_in_worker)
    parallio.run(workers=1, parallel=host, io="epoll")
    [(tag, message)] = RESULTS
    assert tag == "ProtectionError" and "belong to the main thread" in message


def test_a_protected_object_shared_with_workers(host):
    config = parallio.protect(_funcs.Config())
    assert parallio.protected(config) and not parallio.protected(_funcs.Config())
    assert parallio.protect(config) is config
    parallio.share("config", config)
    parallio.submit_work(_funcs.use_shared_protect, ("config",))
    parallio.run(workers=1, parallel=host, io="epoll")
    assert RESULTS == [("object", "set by worker 1", True, [1, 2, 3])]
    assert config.name == "set by worker 1"


def test_a_protected_object_on_the_main_thread():
    counts = parallio.dict(a=1)
    counts["b"] = 2
    assert counts.atomic(_funcs.bump, "a") == 2
    assert sorted(counts) == ["a", "b"] and len(counts) == 2 and "a" in counts
    assert counts.get("missing", 0) == 0 and counts == {"a": 2, "b": 2}
    numbers = parallio.list([3, 1])
    numbers.append(2)
    numbers.sort()
    assert list(numbers) == [1, 2, 3] and repr(numbers) == "protected([1, 2, 3])"


def _memory_hosts() -> list:
    reason = InterpretersHost.unavailable_reason()
    return ["processes", pytest.param("interpreters", marks=pytest.mark.skipif(
        reason is not None, reason=reason or "")), "threads"]


@pytest.mark.parametrize("host", _memory_hosts())
def test_a_200_mb_buffer_read_by_two_workers_is_in_memory_once(host):
    completed = subprocess.run(
        [sys.executable, "-m", "tests.services._memory", host], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    megabyte = 1024 * 1024
    assert figures["touched"] == [200 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")] * 2
    # Two private copies would add 400 MB; the memfd is one copy, plus what
    # the workers' interpreters take themselves.
    assert figures["pss_added"] < 300 * megabyte, figures
    if figures["processes"] == 1:
        assert figures["rss_added"] < 300 * megabyte, figures
