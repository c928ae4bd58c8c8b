"""Echo round trips: the runtime alone, without HTTP.

``python -m parallio.bench.echo`` starts one-worker echo servers, pinned to
CPU 0, and drives each in turn from a client process pinned to CPU 1:
``--connections`` sockets (comma-separated counts run one after the other),
each sending 64 bytes and waiting for them to come back. The servers:

- ``asyncio``: an ``asyncio.Protocol`` echo server on the stdlib loop, and
  the same code on ``uvloop`` and on parallio's event loop
  (``loop-uring``, ``loop-epoll``: :mod:`parallio.loop` on each engine);
- ``parallio-uring``, ``parallio-epoll``: parallio's own protocol API.

Contenders alternate for ``--rounds`` rounds; the medians are reported as
round trips per second and as server CPU microseconds per round trip (from
/proc), with ratios against asyncio measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import time

from .harness import raise_fd_limit
from .proc import cpu_times, process_tree

MESSAGE = b"x" * 64

#: The asyncio contenders: one echo server's code, on three loops (argv[1]).
ASYNCIO_ECHO = """
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0,
                                                             backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
kind = sys.argv[1]
if kind == "asyncio":
    factory = None
elif kind == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    import parallio.loop
    factory = lambda: parallio.loop.new_event_loop(kind.split("-")[1])
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""
ASYNCIO_CONTENDERS = ("asyncio", "uvloop", "loop-uring", "loop-epoll")


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 else []


def start_server(contender: str) -> tuple[subprocess.Popen, int]:
    """Start a contender pinned to CPU 0; returns it with its port."""
    if contender in ASYNCIO_CONTENDERS:
        command = [sys.executable, "-c", ASYNCIO_ECHO, contender]
        process = subprocess.Popen(_pin(0) + command, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        return process, int(process.stdout.readline())
    engine = contender.split("-", 1)[1]
    command = [sys.executable, "-m", "parallio", "echo", "--port", "0", "--workers", "1",
               "--io", engine, "--parallel", "processes"]
    process = subprocess.Popen(_pin(0) + command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "serving <parallio server" in line:
            return process, int(line.rsplit(":", 1)[1].rstrip(">\n"))
    raise RuntimeError(f"{contender} did not start")


def drive(port: int, connections: int, seconds: float,
          server_pids: list[int] | None = None) -> tuple[int, float, float]:
    """Ping-pong on every connection for ``seconds``, once all are open;
    returns the round trips and the user and system CPU seconds
    ``server_pids`` used meanwhile (0 without pids)."""
    raise_fd_limit()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    poller = select.epoll()
    by_fd = {sock.fileno(): sock for sock in socks}
    #: Bytes received and not yet counted as a round trip, per descriptor.
    pending = dict.fromkeys(by_fd, 0)
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
    before = cpu_times(server_pids or [])
    for sock in socks:
        sock.send(MESSAGE)
    trips = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _mask in poller.poll(0.5):
            sock = by_fd[fd]
            pending[fd] += len(sock.recv(65536))
            while pending[fd] >= len(MESSAGE):
                pending[fd] -= len(MESSAGE)
                trips += 1
                sock.send(MESSAGE)
    used = cpu_times(server_pids or []) - before
    for sock in socks:
        sock.close()
    return trips, used.user, used.system


def measure(contender: str, connections: int, seconds: float) -> dict[str, float]:
    process, port = start_server(contender)
    try:
        pids = process_tree(process.pid)
        drive(port, min(connections, 64), 0.3)  # warm-up
        client = subprocess.run(
            _pin(1) + [sys.executable, "-c",
                       f"from parallio.bench.echo import drive; "
                       f"print(*drive({port}, {connections}, {seconds}, {pids!r}))"],
            capture_output=True, text=True, check=True)
        trips_text, user_text, system_text = client.stdout.split()
        trips, user, system = int(trips_text), float(user_text), float(system_text)
    finally:
        process.terminate()
        process.wait(10)
    return {"trips_per_s": trips / seconds, "cpu_us_per_trip": (user + system) / trips * 1e6,
            "user_us": user / trips * 1e6, "sys_us": system / trips * 1e6,
            "trips_per_cpu_s": trips / (user + system)}


def available_contenders() -> list[str]:
    """Every contender this machine can run."""
    from ..engine import uring_unavailable_reason

    contenders = ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass
    else:
        contenders.append("uvloop")
    uring = uring_unavailable_reason() is None
    contenders += ["loop-epoll", *(["loop-uring"] if uring else []), "parallio-epoll",
                   *(["parallio-uring"] if uring else [])]
    return contenders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parallio.bench.echo", description=__doc__)
    parser.add_argument("--connections", default="32",
                        help="comma-separated connection counts (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", help="comma-separated subset of the contenders")
    args = parser.parse_args(argv)
    raise_fd_limit()
    contenders = available_contenders()
    if args.contenders:
        contenders = [name for name in args.contenders.split(",") if name in contenders]
    for connections in (int(count) for count in args.connections.split(",")):
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for round_number in range(args.rounds):
            shift = round_number % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                results[name].append(measure(name, connections, args.seconds))
                print(f"round {round_number + 1}: {name} c{connections}: "
                      f"{results[name][-1]['trips_per_s']:,.0f} round trips/s", file=sys.stderr)
        medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                   for name, runs in results.items()}
        base = medians[contenders[0]]
        print(f"\necho, 1 worker, {connections} connections, 64-byte messages, "
              f"median of {args.rounds} ({sys.version.split()[0]})")
        print(f"| server | round trips/s | round trips per CPU-s | vs {contenders[0]} | "
              f"server CPU µs/trip (user+sys) |")
        print("|---|---:|---:|---:|---:|")
        for name, figures in medians.items():
            print(f"| {name} | {figures['trips_per_s']:,.0f} | {figures['trips_per_cpu_s']:,.0f} | "
                  f"{figures['trips_per_cpu_s'] / base['trips_per_cpu_s']:.2f}x | "
                  f"{figures['cpu_us_per_trip']:.1f} ({figures['user_us']:.1f}"
                  f"+{figures['sys_us']:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
