"""Echo round trips: the runtime alone, without HTTP.

``python -m parallio.bench.echo`` starts one-worker echo servers (parallio on
each engine, and an asyncio ``Protocol`` server as the peer), pinned to CPU 0,
and drives each in turn from a client process pinned to CPU 1: ``--connections``
sockets, each sending 64 bytes and waiting for them to come back. Contenders
alternate for ``--rounds`` rounds; the medians are reported as round trips per
second and as server CPU microseconds per round trip (from /proc), with
ratios against asyncio measured in the same run.
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

from .proc import cpu_times, process_tree

MESSAGE = b"x" * 64

ASYNCIO_ECHO = """
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []


def start_server(contender: str) -> tuple[subprocess.Popen, int]:
    """Start a contender pinned to CPU 0; returns it with its port."""
    if contender == "asyncio":
        command = [sys.executable, "-c", ASYNCIO_ECHO]
        process = subprocess.Popen(_pin(0) + command, stdout=subprocess.PIPE, text=True)
        return process, int(process.stdout.readline())
    engine = contender.split("-", 1)[1]
    command = [sys.executable, "-m", "parallio", "echo", "--port", "0", "--workers", "1",
               "--io", engine, "--parallel", "processes"]
    process = subprocess.Popen(_pin(0) + command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "serving <parallio server" in line:
            return process, int(line.rsplit(":", 1)[1].rstrip(">\n"))
    raise RuntimeError(f"{contender} did not start")


def drive(port: int, connections: int, seconds: float) -> int:
    """Ping-pong on every connection for ``seconds``; returns round trips."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        by_fd[sock.fileno()] = [sock, 0]
        poller.register(sock.fileno(), select.EPOLLIN)
        sock.send(MESSAGE)
    trips = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _mask in poller.poll(0.5):
            entry = by_fd[fd]
            entry[1] += len(entry[0].recv(65536))
            while entry[1] >= len(MESSAGE):
                entry[1] -= len(MESSAGE)
                trips += 1
                entry[0].send(MESSAGE)
    for sock in socks:
        sock.close()
    return trips


def measure(contender: str, connections: int, seconds: float) -> dict[str, float]:
    process, port = start_server(contender)
    try:
        pids = process_tree(process.pid)
        drive(port, connections, 0.3)  # warm-up
        before = cpu_times(pids)
        client = subprocess.run(
            _pin(1) + [sys.executable, "-c",
                       f"from parallio.bench.echo import drive; "
                       f"print(drive({port}, {connections}, {seconds}))"],
            capture_output=True, text=True, check=True)
        used = cpu_times(pids) - before
        trips = int(client.stdout)
    finally:
        process.terminate()
        process.wait(10)
    return {"trips_per_s": trips / seconds, "cpu_us_per_trip": used.total / trips * 1e6,
            "user_us": used.user / trips * 1e6, "sys_us": used.system / trips * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parallio.bench.echo", description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from ..engine import uring_unavailable_reason
    contenders = ["asyncio", "parallio-epoll"]
    if uring_unavailable_reason() is None:
        contenders.append("parallio-uring")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for round_number in range(args.rounds):
        for name in contenders:
            results[name].append(measure(name, args.connections, args.seconds))
            print(f"round {round_number + 1}: {name}: "
                  f"{results[name][-1]['trips_per_s']:,.0f} round trips/s", file=sys.stderr)
    medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
               for name, runs in results.items()}
    base = medians["asyncio"]
    print(f"echo, 1 worker, {args.connections} connections, 64-byte messages, "
          f"median of {args.rounds} ({sys.version.split()[0]})")
    print("| server | round trips/s | vs asyncio | server CPU µs/trip (user+sys) | vs asyncio |")
    print("|---|---:|---:|---:|---:|")
    for name, figures in medians.items():
        print(f"| {name} | {figures['trips_per_s']:,.0f} | "
              f"{figures['trips_per_s'] / base['trips_per_s']:.2f}x | "
              f"{figures['cpu_us_per_trip']:.1f} ({figures['user_us']:.1f}+{figures['sys_us']:.1f}) | "
              f"{base['cpu_us_per_trip'] / figures['cpu_us_per_trip']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
