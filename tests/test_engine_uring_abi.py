"""io_uring specifics: the ABI layouts, setup, and engine behaviour the
generic contract tests (test_engines.py) cannot see from outside."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import textwrap
import threading
import time

import pytest

from parallio.engine import _uring_abi as abi

needs_uring = pytest.mark.skipif(not abi.probe(), reason="io_uring_setup is refused here")


# -- layouts --------------------------------------------------------------------

def test_struct_sizes_match_the_kernel_header():
    assert abi.SQE.size == 64
    assert abi.CQE.size == 16
    assert ctypes.sizeof(abi.IoUringParams) == 120
    assert ctypes.sizeof(abi.GetEventsArg) == 24
    assert ctypes.sizeof(abi.BufReg) == 40
    assert ctypes.sizeof(abi.KernelTimespec) == 16
    assert abi.MSGHDR.size == 56 and abi.IOVEC.size == 16


def test_sqe_field_offsets():
    raw = bytearray(64)
    abi.SQE.pack_into(raw, 0, 0x11, 0x22, 0x3344, -2, 0x0808080808080808,
                      0x1010101010101010, 0x18181818, 0x1C1C1C1C, 0x2020202020202020, 0x2828)
    assert raw[0] == 0x11 and raw[1] == 0x22                       # opcode, flags
    assert int.from_bytes(raw[2:4], sys.byteorder) == 0x3344        # ioprio
    assert int.from_bytes(raw[4:8], sys.byteorder, signed=True) == -2   # fd
    assert raw[8:16] == b"\x08" * 8                                 # off / addr2
    assert raw[16:24] == b"\x10" * 8                                # addr
    assert raw[24:28] == b"\x18" * 4                                # len
    assert raw[28:32] == b"\x1c" * 4                                # op flags
    assert raw[32:40] == b"\x20" * 8                                # user_data
    assert raw[40:42] == b"\x28\x28"                                # buf_group
    assert raw[42:] == bytes(22)                                    # cleared


def test_bytes_are_sent_from_where_their_contents_are():
    from parallio.engine import uring
    for data in (b"", b"payload", bytes(range(256)) * 100):
        assert ctypes.string_at(id(data) + uring._BYTES_DATA, len(data)) == data


def test_readonly_address_finds_a_slice_of_bytes():
    data = b"0123456789" * 10_000
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    view = memoryview(data)[12_345:]
    assert abi.readonly_address(view) == base + 12_345
    assert ctypes.string_at(abi.readonly_address(view), 5) == data[12_345:12_350]


def test_probe_is_false_when_setup_is_refused(monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(abi, "Ring", refused)
    assert abi.probe() is False


# -- the engine ---------------------------------------------------------------

@pytest.fixture
def make_engine():
    from parallio.engine.uring import UringEngine
    made = []

    def make(**kwargs) -> UringEngine:
        engine = UringEngine(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.shutdown()


@pytest.fixture
def socketpairs():
    """Make (the engine's handle of our end, peer socket) pairs; closes
    what the test left open."""
    pairs = []

    def make(engine, count: int) -> list[tuple[object, socket.socket]]:
        made = []
        for _ in range(count):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            made.append((engine.open(ours.detach()), theirs))
        pairs.extend(made)
        return made

    yield make
    for handle, peer in pairs:
        peer.close()
        if not handle.closed:
            os.close(handle.fd)


def wait_for(engine, condition, what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        engine.poll(0.02)


def completion_waiting(engine, deadline: float = 5.0) -> None:
    """Run completion work without dispatching until a completion waits in
    the ring: the precondition of the races tested below."""
    end = time.monotonic() + deadline
    while engine._words[engine._cq_tail_word] == engine._cq_head:
        assert time.monotonic() < end, "no completion reached the ring"
        engine._enter(0, abi.IORING_ENTER_GETEVENTS, None)
        time.sleep(0.001)


@needs_uring
def test_setup_flags_and_features(make_engine):
    engine = make_engine()
    assert engine.setup_flags & abi.IORING_SETUP_SINGLE_ISSUER
    assert engine.setup_flags & (abi.IORING_SETUP_DEFER_TASKRUN | abi.IORING_SETUP_COOP_TASKRUN)
    assert engine.features & abi.REQUIRED_FEATURES == abi.REQUIRED_FEATURES
    assert engine.uses_buffer_ring and engine.cancels_by_fd


@needs_uring
def test_one_enter_per_turn(make_engine, socketpairs, monkeypatch):
    from parallio.engine import uring
    engine = make_engine()
    pairs = socketpairs(engine, 5)
    received = []
    for handle, _ in pairs:
        engine.start_reading(handle, received.append)
    engine.poll(0)
    enters = []
    real = uring._syscall

    def counting(number, *args):
        if number == abi.NR_IO_URING_ENTER:
            enters.append(args[1])   # to_submit
        return real(number, *args)

    monkeypatch.setattr(uring, "_syscall", counting)
    sent = []
    for handle, peer in pairs:
        engine.send(handle, b"x", sent.append)
        peer.sendall(b"y")
    engine.poll(1.0)
    assert enters == [5], "all submissions of a turn go in one io_uring_enter"
    wait_for(engine, lambda: len(sent) == 5 and len(received) == 5, "completions")


@needs_uring
def test_full_submission_queue_is_flushed_mid_turn(make_engine, socketpairs):
    engine = make_engine(entries=4)   # 150 reads armed through a 4-entry SQ
    pairs = socketpairs(engine, 150)
    received: dict[int, bytes] = {}
    for handle, _ in pairs:
        engine.start_reading(handle, lambda data, fd=handle.fd: received.__setitem__(fd, data))
    engine.poll(0)
    for handle, peer in pairs:
        peer.sendall(b"%d" % handle.fd)
    wait_for(engine, lambda: len(received) == 150, "150 chunks")
    assert all(data == b"%d" % fd for fd, data in received.items())


@needs_uring
def test_buffer_ring_running_dry_loses_nothing(make_engine, socketpairs):
    engine = make_engine(buffer_count=2, buffer_size=1024)   # recvs hit ENOBUFS
    pairs = socketpairs(engine, 20)
    received: dict[int, bytearray] = {handle.fd: bytearray() for handle, _ in pairs}
    for handle, _ in pairs:
        engine.start_reading(handle, received[handle.fd].extend)
    engine.poll(0)
    payload = os.urandom(10_000)
    for _, peer in pairs:
        peer.sendall(payload)
    wait_for(engine, lambda: all(len(data) == len(payload) for data in received.values()),
             "every payload")
    assert all(data == payload for data in received.values())


@needs_uring
def test_completion_queue_overflow_loses_nothing(make_engine):
    from parallio.engine import uring
    engine = make_engine(entries=4)   # a 32-entry CQ
    done = []
    # NOPs complete inline while being submitted, so flushing 100 of them
    # through the 4-entry SQ overflows the CQ before anyone reaps it.
    for _ in range(100):
        owner = engine.open(-1)
        owner.on_written = done.append
        engine._push(0, -1, 0, 0, 0, owner.id << 8 | uring._WRITE)   # IORING_OP_NOP
    engine._enter(0, 0, None)
    assert engine._words[engine._sq_flags_word] & abi.IORING_SQ_CQ_OVERFLOW
    engine.poll(0)
    assert done == [0] * 100


@needs_uring
def test_callback_exception_keeps_the_rest_of_the_batch(make_engine, socketpairs):
    engine = make_engine()
    pairs = socketpairs(engine, 3)
    calls = []

    def on_data(data):
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("callback failed")

    for handle, _ in pairs:
        engine.start_reading(handle, on_data)
    engine.poll(0)
    for handle, peer in pairs:
        peer.sendall(b"z")
    time.sleep(0.05)
    with pytest.raises(RuntimeError):
        wait_for(engine, lambda: False, "the failure")
    wait_for(engine, lambda: len(calls) == 3, "the other two chunks")


@needs_uring
def test_driven_from_another_thread_than_built(make_engine, socketpairs):
    engine = make_engine()      # built here, first entered by the worker below
    (handle, peer), = socketpairs(engine, 1)
    received, errors = [], []

    def worker():
        try:
            engine.start_reading(handle, received.append)
            peer.sendall(b"hello")
            wait_for(engine, lambda: received, "data in the worker thread")
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert not errors and received == [b"hello"]


@needs_uring
def test_chunks_arriving_while_stop_reading_cancels_are_kept(make_engine, socketpairs):
    engine = make_engine()
    (handle, peer), = socketpairs(engine, 1)
    received = []
    engine.start_reading(handle, received.append)
    engine.poll(0)
    peer.sendall(b"early")
    # The chunk's completion reaches the ring but is not dispatched yet...
    completion_waiting(engine)
    engine.stop_reading(handle)
    # ...and is dispatched while reading is stopped: it must be held.
    for _ in range(5):
        engine.poll(0.01)
    assert received == []
    peer.sendall(b"-later")
    engine.start_reading(handle, received.append)
    wait_for(engine, lambda: b"".join(received) == b"early-later", "held then new data")


@needs_uring
def test_no_callback_for_completion_already_in_ring_at_close(make_engine, socketpairs):
    engine = make_engine()
    (handle, peer), = socketpairs(engine, 1)
    calls = []
    engine.start_reading(handle, calls.append)
    engine.send(handle, b"out", calls.append)
    engine.poll(0)
    peer.sendall(b"in")
    completion_waiting(engine)
    engine.close(handle)
    for _ in range(5):
        engine.poll(0.01)
    assert calls == [3], "only the send that completed before close reports"


@needs_uring
def test_sendmsg_beyond_iov_max_is_a_partial_send(make_engine, socketpairs):
    engine = make_engine()
    (handle, peer), = socketpairs(engine, 1)
    results = []
    piece = b"0123456789" * 4   # big enough in total not to be joined
    engine.sendmsg(handle, [piece] * (abi.IOV_MAX + 10), results.append)
    wait_for(engine, lambda: results, "the gather-send")
    assert 0 < results[0] <= len(piece) * abi.IOV_MAX


@needs_uring
def test_shutdown_from_a_callback(make_engine, socketpairs):
    engine = make_engine()
    pairs = socketpairs(engine, 2)
    calls = []

    def on_data(data):
        calls.append(data)
        engine.shutdown()

    for handle, _ in pairs:
        engine.start_reading(handle, on_data)
    engine.poll(0)
    for _, peer in pairs:
        peer.sendall(b"x")
    time.sleep(0.05)
    engine.poll(1.0)
    assert calls == [b"x"], "no callback after shutdown"


@needs_uring
@pytest.mark.skipif(sys.version_info < (3, 13), reason="isolated subinterpreters need 3.13")
def test_engine_runs_in_an_isolated_subinterpreter():
    import _interpreters
    script = textwrap.dedent(f"""
        import sys, socket
        sys.path[:0] = {sys.path!r}
        from parallio.engine.uring import UringEngine
        engine = UringEngine()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        got = []
        handle = engine.open(ours.fileno())
        engine.start_reading(handle, got.append)
        theirs.sendall(b"sub")
        for _ in range(100):
            engine.poll(0.02)
            if got:
                break
        sent = []
        engine.send(handle, b"back", sent.append)
        for _ in range(100):
            engine.poll(0.02)
            if sent:
                break
        assert got == [b"sub"] and sent == [4] and theirs.recv(10) == b"back", (got, sent)
        engine.shutdown()
        ours.close(); theirs.close()
    """)
    interp = _interpreters.create("isolated")
    try:
        failure = _interpreters.run_string(interp, script)
    finally:
        _interpreters.destroy(interp)
    assert failure is None, failure
