"""Protocols and applications the supervision, fault and operations tests
serve: in a module, so workers of every host import them by path."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import parallio

# -- the control plane -----------------------------------------------------------

#: A reply far larger than a pipe's buffer (64 KiB).
BIG_REPLY = 1 << 20


def slow_big_result(delay: float) -> bytes:
    """On the main thread: answers after the worker stopped waiting."""
    time.sleep(delay)
    return b"x" * BIG_REPLY


def small_result() -> str:
    return "small"


class MainCalls:
    """``slow``: a main-thread call that times out (its big reply comes
    later); ``fast``: one that is answered."""

    def data_received(self, transport, data):
        command = data.strip()
        if command == b"slow":
            try:
                parallio.call_from_main_thread_and_wait(slow_big_result, (0.6,), timeout=0.2)
            except TimeoutError:
                return b"timeout\n"
            return b"answered?\n"
        if command == b"fast":
            result = parallio.call_from_main_thread_and_wait(small_result, (), timeout=5)
            return f"ok {result}\n"
        return b"?\n"


# -- faults ----------------------------------------------------------------------

class Faults:
    """``who``: worker number and pid; ``hang S``: block the worker's loop for
    S seconds; ``exit``: os._exit(0); ``crash``: read address 0 (SIGSEGV)."""

    def data_received(self, transport, data):
        command, _, argument = data.strip().partition(b" ")
        if command == b"who":
            return f"{parallio.thread_seq_id()} {os.getpid()}\n"
        if command == b"hang":
            time.sleep(float(argument))
            return b"awake\n"
        if command == b"exit":
            os._exit(0)
        if command == b"crash":
            ctypes.string_at(0)
        if command == b"stop-self":
            os.kill(os.getpid(), signal.SIGSTOP)
            return b"continued\n"
        return b"?\n"


class Slow:
    """Answers ``who`` after a pause: a request in flight for a while."""

    def data_received(self, transport, data):
        time.sleep(0.05)
        return f"{parallio.thread_seq_id()} {os.getpid()}\n"




class Web:
    """An HTTP fast-path application for the tests under load. ``/who``
    answers ``worker pid``; ``/hang?S`` blocks its worker S seconds;
    ``/die?S`` does that, then ends its worker (SystemExit)."""

    http11 = True

    def who(self, transport, request):
        return f"{parallio.thread_seq_id()} {os.getpid()}".encode()

    def hang(self, transport, request):
        time.sleep(float(request.query or 0))
        return self.who(transport, request)

    def die(self, transport, request):
        time.sleep(float(request.query or 0))
        raise SystemExit(f"worker {parallio.thread_seq_id()} told to die")


def _version() -> str:
    path = os.environ.get("PARALLIO_TEST_VERSION_FILE")
    if not path:
        return "none"
    with open(path) as file:
        return file.read().strip()


#: Read when the module is imported: a worker that imported it anew says so.
VERSION = _version()
#: What /grow keeps alive (its worker's memory grows).
_kept: list[bytes] = []


class _Identity:
    """A worker's own name, unlike its number, pid or thread: never reused."""

    def __init__(self, worker) -> None:
        self.token = os.urandom(6).hex()


class Version:
    """``/version``: ``worker version thread``; ``/who``: ``worker pid:token``
    (one worker's identity, in every host); ``/grow?MB``: keep MB more
    megabytes."""

    http11 = True

    def version(self, transport, request):
        return f"{parallio.thread_seq_id()} {VERSION} {threading.get_ident()}".encode()

    def who(self, transport, request):
        token = parallio.current_worker().extension(_Identity).token
        return f"{parallio.thread_seq_id()} {os.getpid()}:{token}".encode()

    def grow(self, transport, request):
        _kept.append(os.urandom(int(request.query) << 20))
        return self.who(transport, request)
