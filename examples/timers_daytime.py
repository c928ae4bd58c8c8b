"""Daytime, PyParallel style: a timer keeps the time, every worker serves it.

A timer ticks once a second in a worker and formats the date; the main
thread gets each tick's result as ``CLOCK.data`` (a copy). Each connection
to the daytime port (RFC 867) is answered with that string: the Timer lives
on the main thread, so workers of every host ask for it with
``call_from_main_thread_and_wait``.

    python examples/timers_daytime.py [--port 8013] [--seconds N]
                                      [--parallel auto|threads|interpreters|processes]

Try ``nc 127.0.0.1 8013``. With ``--seconds N`` it connects to itself once,
then stops after N seconds: a one-shot timer asks the main thread to stop,
as Ctrl-C would.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

try:
    import parallio
except ImportError:  # run from a checkout: parallio is the directory above
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import parallio

#: The ticking timer; set on the main thread (workers ask it for .data).
CLOCK: parallio.Timer | None = None


def tick() -> str:
    """In a worker, once a second: the time as RFC 867 wants it."""
    return time.strftime("%A, %B %d, %Y %H:%M:%S-%Z") + "\r\n"


def latest_tick() -> str:
    """On the main thread: the last tick's result."""
    assert CLOCK is not None
    return CLOCK.data or tick()


class Daytime:
    def connection_made(self, transport: parallio.Transport) -> str:
        transport.close()
        return parallio.call_from_main_thread_and_wait(latest_tick, ())


def stop_serving() -> None:
    """On the main thread: stop, as Ctrl-C would."""
    signal.raise_signal(signal.SIGTERM)


def finish() -> None:
    """In a worker, once: ask the main thread to stop."""
    parallio.call_from_main_thread(stop_serving, ())


def ask(port: int) -> None:
    time.sleep(1.5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reply = sock.recv(256).decode().strip()
    print(f"daytime says: {reply}", flush=True)


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parallel", default="auto")
    parser.add_argument("--io", default="auto")
    args = parser.parse_args()

    endpoint = parallio.server("127.0.0.1", args.port)
    parallio.register(endpoint, Daytime)
    CLOCK = parallio.timer(0, 1, tick).start()
    if args.seconds is not None:
        parallio.timer(args.seconds, 0, finish).start()
        threading.Thread(target=ask, args=(endpoint.port,), daemon=True).start()
    print(f"daytime on 127.0.0.1:{endpoint.port}", flush=True)
    parallio.run(workers=args.workers, parallel=args.parallel, io=args.io)
    print(f"clock ticked {CLOCK.count} time(s), {CLOCK.skipped} skipped; "
          f"last: {CLOCK.data.strip() if CLOCK.data else None}", flush=True)


if __name__ == "__main__":
    main()
