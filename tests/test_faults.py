"""Faults, tested on real sockets in every host: a worker that dies or is
killed under load, one that hangs, one that takes its process down, and a
server stopped under load.

"Layouts" are the hosts plus ``groups``: processes of isolated interpreters
(``Runtime(processes=P)``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from typing import Iterator

import pytest

from parallio import Runtime
from parallio import protocol_ref
from parallio._spec import Supervision
from parallio.host import InterpretersHost
from parallio.runtime import make_server
from parallio.supervision import EXIT_STATUS

from ._http_client import Client, encode_request
from ._load import Load
from .conftest import ENGINES, engine_skip_reason, recv_all, recv_until
from .test_cli import start_cli, stop

A = "tests._supervision_apps:"
LAYOUTS = ["threads", "interpreters", "processes", "groups"]
#: Layouts whose workers run in processes of their own (or of their group):
#: they can be killed one by one.
KILLABLE = ("processes", "groups")


@pytest.fixture(params=LAYOUTS)
def layout(request) -> str:
    if request.param in ("interpreters", "groups"):
        reason = InterpretersHost.unavailable_reason()
        if reason:
            pytest.skip(reason)
    return request.param


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    reason = engine_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@contextlib.contextmanager
def running(app: str, layout: str, workers: int = 2, drain_timeout: float = 5.0,
            io: str = "auto", **supervision: object) -> Iterator[Runtime]:
    endpoint = make_server("127.0.0.1", 0)
    endpoint.protocol = protocol_ref(A + app)
    if layout == "groups":
        # One interpreter per process: each worker is killable by itself.
        runtime = Runtime([endpoint], workers=1, processes=workers, parallel="interpreters",
                          io=io, drain_timeout=drain_timeout,
                          supervision=Supervision(**supervision))
    else:
        runtime = Runtime([endpoint], workers=workers, parallel=layout, io=io,
                          drain_timeout=drain_timeout, supervision=Supervision(**supervision))
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def address(runtime: Runtime) -> tuple:
    return ("127.0.0.1", runtime.endpoints[0].port)


def pid_of(runtime: Runtime, seq_id: int) -> int:
    return next(info["pid"] for info in runtime.worker_info if info["worker"] == seq_id)


def client_on_worker(runtime: Runtime, seq_id: int) -> Client:
    """A keep-alive connection that worker ``seq_id`` accepted."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client = Client(address(runtime))
        if client.get("/who").body.split()[0] == str(seq_id).encode():
            return client
        client.sock.close()
    raise AssertionError(f"no connection landed on worker {seq_id}")


def wait_restarted(runtime: Runtime, seq_id: int, old_pid: int, layout: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = {i["worker"]: i for i in runtime.worker_info}
        stats = {s["worker"]: s for s in runtime.stats()}
        if seq_id in stats and (layout not in KILLABLE or info[seq_id]["pid"] != old_pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {seq_id} was not restarted")


def end_worker_one(runtime: Runtime, layout: str, blocked: Client | None = None) -> int:
    """End worker 1 the way its layout allows: SIGKILL where it has a
    process of its own, else it ends itself (SystemExit in a callback).
    Returns its pid."""
    pid = pid_of(runtime, 1)
    if layout in KILLABLE:
        os.kill(pid, signal.SIGKILL)
    else:
        victim = blocked or client_on_worker(runtime, 1)
        victim.send(encode_request("GET", "/die?0", [], b""))
    return pid


def test_a_dead_workers_backlog_is_served_by_its_successor(layout, engine):
    """Connections waiting in a worker's accept queue when it dies are not
    reset: the main thread keeps its listening socket, and the restarted
    worker accepts them."""
    with running("Web", layout, io=engine) as runtime:
        blocked = client_on_worker(runtime, 1)
        if layout in KILLABLE:
            blocked.send(encode_request("GET", "/hang?5", [], b""))
        else:
            blocked.send(encode_request("GET", "/die?1.0", [], b""))
        time.sleep(0.3)  # worker 1 is blocked in its callback: it accepts nothing
        waiting = [Client(address(runtime), timeout=20) for _ in range(40)]
        for client in waiting:
            client.send(encode_request("GET", "/who", [], b""))
        time.sleep(0.3)
        old_pid = end_worker_one(runtime, layout, blocked)
        answered_by = [client.read().body.split()[0] for client in waiting]
        for client in waiting:
            client.sock.close()
        blocked.sock.close()
        # Every one answered; those queued on worker 1 by its successor.
        assert len(answered_by) == 40
        assert answered_by.count(b"1") > 0, "nothing was queued on worker 1 (by chance?)"
        wait_restarted(runtime, 1, old_pid, layout)


def test_a_worker_killed_under_load(layout, capsys):
    """The other worker goes on, the dead one is restarted, and only the
    requests in flight on it fail (each client has one at most)."""
    with running("Web", layout) as runtime:
        with Load(address(runtime), keep_alive=4, fresh=4) as load:
            load.wait_for(200)
            served_by_two = load.by_worker["2"]
            old_pid = end_worker_one(runtime, layout)
            wait_restarted(runtime, 1, old_pid, layout)
            answered_by_one = load.by_worker["1"]
            load.wait_for(300)
            deadline = time.monotonic() + 10
            while load.by_worker["1"] == answered_by_one and time.monotonic() < deadline:
                time.sleep(0.05)
        assert load.by_worker["1"] > answered_by_one, "the restarted worker serves nothing"
        assert load.by_worker["2"] > served_by_two
        assert len(load.failures) <= 8, load.failures
        with capsys.disabled():
            print(f"\n[{layout}] worker 1 ended under load: {load.ok} answered, "
                  f"{len(load.failures)} failed")


def test_sigterm_under_load_answers_every_request(layout, engine, capsys):
    """Every request on a connection made before the stop is answered.
    Connections made once the drain began race with the listeners closing
    (as in any server): their failures are counted, and bounded."""
    with running("Web", layout, io=engine) as runtime:
        with Load(address(runtime), keep_alive=4, fresh=4) as load:
            load.wait_for(200)
            stopped_at = time.monotonic()
            runtime.stop()
        assert load.failed_on_connections_made_before(stopped_at) == []
        late = len(load.failures)
        assert late <= 2, load.failures
        with capsys.disabled():
            print(f"\n[{layout}-{engine}] SIGTERM under load: {load.ok} answered, 0 failed on connections "
                  f"made before the stop, {late} on connections made during the drain")


def test_a_request_on_a_keep_alive_connection_during_the_drain_is_answered(layout):
    with running("Web", layout, workers=1) as runtime:
        with Client(address(runtime)) as client:
            assert client.get("/who").status == 200
            runtime.stop(wait=False)
            time.sleep(0.3)  # the drain has begun; the connection was idle
            reply = client.get("/who")
            assert reply.status == 200
            assert reply.headers["connection"] == "close"
            assert client.sock.recv(1) == b""
        assert runtime.join(15)


def test_sigterm_to_the_command_under_load():
    process, port = start_cli("serve", A + "Web", "--workers", "2", "--io", "epoll")
    try:
        with Load(("127.0.0.1", port), keep_alive=4, fresh=4) as load:
            load.wait_for(200)
            stopped_at = time.monotonic()
            status, err = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 0, err
    assert load.failed_on_connections_made_before(stopped_at) == []


def wait_for_log(caplog, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"never logged {text!r}"
        time.sleep(0.05)


def test_a_hung_worker_is_noticed(layout, caplog):
    """With --worker-timeout, a worker that sends no heartbeat is logged;
    where the host can kill it, it is replaced."""
    caplog.set_level(logging.WARNING, "parallio")
    with running("Web", layout, worker_timeout=1.0) as runtime:
        if layout in KILLABLE:
            old_pid = pid_of(runtime, 1)
            started = time.monotonic()
            os.kill(old_pid, signal.SIGSTOP)
            wait_for_log(caplog, "worker 1 sent no heartbeat for")
            assert time.monotonic() - started < 4.0
            wait_restarted(runtime, 1, old_pid, layout)
            with client_on_worker(runtime, 1) as client:
                assert client.get("/who").status == 200
            assert any("killing" in record.getMessage() for record in caplog.records)
        else:
            with client_on_worker(runtime, 1) as client:
                client.send(encode_request("GET", "/hang?3", [], b""))
                wait_for_log(caplog, "worker 1 sent no heartbeat for")
                assert any("cannot stop it" in record.getMessage() for record in caplog.records)
                assert client.read().status == 200  # it was only slow
            wait_for_log(caplog, "worker 1 answers again")
        # The other worker was never taken for hung.
        assert not any("worker 2" in record.getMessage() for record in caplog.records)


def _line(address: tuple, command: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(command + b"\n")
        return recv_until(sock)


def _serve_and_fault(host: str, fault: bytes) -> tuple[int, str]:
    """Serve Faults on ``host`` from the command line, send ``fault``, and
    return how the server ended and what it logged."""
    if host == "interpreters" and InterpretersHost.unavailable_reason():
        pytest.skip(InterpretersHost.unavailable_reason())
    process, port = start_cli("serve", A + "Faults", "--parallel", host, "--workers", "2")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(fault + b"\n")
            assert sock.recv(100) == b""
        status = process.wait(20)
        return status, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("host", ["threads", "interpreters"])
def test_os_exit_in_an_in_process_worker_ends_the_server_with_a_failure(host):
    status, err = _serve_and_fault(host, b"exit")
    assert status == EXIT_STATUS, err
    assert re.search(rf"worker \d called os._exit\(0\): in the {host} host that ends its whole "
                     rf"process", err), err


@pytest.mark.parametrize("host", ["threads", "interpreters"])
def test_a_crash_in_an_in_process_worker_is_logged_and_fails_the_server(host):
    status, err = _serve_and_fault(host, b"crash")
    assert status == -signal.SIGSEGV, err
    # faulthandler's traceback, to the log: the cause, and which worker.
    assert "Fatal Python error: Segmentation fault" in err, err
    assert re.search(r"in parallio_worker_\d", err), err
    assert "_supervision_apps.py" in err


@pytest.mark.parametrize("layout", KILLABLE)
@pytest.mark.parametrize("fault, ended", [(b"crash", "killed by SIGSEGV"),
                                          (b"exit", "exited with status")])
def test_a_fatal_fault_in_a_worker_process_ends_only_it(layout, fault, ended, caplog):
    if layout == "groups" and InterpretersHost.unavailable_reason():
        pytest.skip(InterpretersHost.unavailable_reason())
    caplog.set_level(logging.WARNING, "parallio")
    with running("Faults", layout) as runtime:
        served = {_line(address(runtime), b"who").split()[0] for _ in range(20)}
        assert served == {b"1", b"2"}
        old_pids = {info["worker"]: info["pid"] for info in runtime.worker_info}
        with socket.create_connection(address(runtime), timeout=10) as sock:
            sock.sendall(fault + b"\n")
            assert recv_all(sock) == b""
        wait_for_log(caplog, ended)
        victim = next(int(record.getMessage().split()[2]) for record in caplog.records
                      if ended in record.getMessage())
        wait_restarted(runtime, victim, old_pids[victim], layout)
        survivor = 3 - victim
        assert {info["worker"]: info["pid"]
                for info in runtime.worker_info}[survivor] == old_pids[survivor]
        assert {_line(address(runtime), b"who").split()[0] for _ in range(20)} == {b"1", b"2"}
