"""Driving wrk and reading back every figure it has.

The Lua scripts in ``lua/`` are joined into one (wrk takes one ``-s``),
after a line that sets their parameters (``BENCH``):

- ``summary.lua``: ``done()`` prints the summary as one JSON line (wrk's
  own text output has no p99.9), always;
- ``heads.lua``: a realistic request head (six fields, as TechEmpower's)
  that differs from the previous one on every request, optionally
  pipelined; left out for a plain-wrk run (wrk's own one-field head, byte
  for byte the same on every request);
- ``pace.lua``: fixed-rate sending for latency runs, wrk2's schedule in
  wrk's ``delay()`` hook, with the lag of late sends (see that file: wrk
  measures latency from the actual send, so it does not correct for
  coordinated omission the way wrk2 does; the lag says how much it left
  out).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_MARKER = "BENCH-SUMMARY "
_LUA = Path(__file__).resolve().parent / "lua"

#: Request heads: each different from the last (heads.lua), or plain wrk's.
UNIQUE, IDENTICAL = "unique", "identical"


def lua_script(heads: str = UNIQUE, depth: int = 1, rate: float | None = None,
               threads: int = 1) -> str:
    """The Lua program for one wrk run."""
    interval = "nil" if rate is None else repr(1000.0 * threads / rate)
    parts = [f'BENCH = {{marker = "{_MARKER}", depth = {depth}, interval_ms = {interval}}}\n',
             (_LUA / "summary.lua").read_text()]
    if heads == UNIQUE:
        parts.append((_LUA / "heads.lua").read_text())
    elif depth != 1:
        raise ValueError("pipelining needs the unique-heads script")
    if rate is not None:
        parts.append((_LUA / "pace.lua").read_text())
    return "\n".join(parts)


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    bytes: int
    socket_errors: dict[str, int]
    non_2xx: int
    latency_ms: dict[str, float]
    #: Paced runs: how late sends left their schedule (percentiles, ms).
    send_lag_ms: dict[str, float]
    command: list[str]

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


class WrkError(RuntimeError):
    """wrk failed or printed no summary."""


def run_wrk(wrk: str, url: str, *, connections: int, duration_s: int, threads: int = 1,
            cpus: str | None = None, rate: float | None = None, heads: str = UNIQUE,
            depth: int = 1, timeout_s: int = 5, lua: str = "") -> WrkResult:
    """Load ``url`` for ``duration_s`` whole seconds (wrk takes no fractions)
    with ``connections`` keep-alive connections, ``depth`` requests pipelined
    on each; at ``rate`` requests/s in all when given, else as fast as the
    server answers. ``cpus`` pins wrk (a taskset list). ``lua`` is added to
    the script: a ``request()`` hook of its own (with ``heads=PLAIN``) that
    varies the requests, say."""
    script = lua_script(heads, depth, rate, threads) + lua
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script_file:
        script_file.write(script)
        script_file.flush()
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
                   f"--timeout={timeout_s}s", "-s", script_file.name, url]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=duration_s + timeout_s + 30)
    return parse_output(completed.stdout, completed.stderr, completed.returncode, command)


def parse_output(stdout: str, stderr: str, returncode: int, command: list[str]) -> WrkResult:
    summary = None
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            summary = json.loads(line[len(_MARKER):])
    if returncode != 0 or summary is None:
        detail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        raise WrkError(f"wrk exited {returncode}: {' | '.join(detail) or 'no output'}")
    duration = summary["duration_us"] / 1e6
    return WrkResult(
        requests=summary["requests"],
        duration_s=duration,
        rps=summary["requests"] / duration if duration else 0.0,
        bytes=summary["bytes"],
        socket_errors={name: summary[name] for name in ("connect", "read", "write", "timeout")},
        # wrk counts a response as a status error when its status is 400 or
        # more; the correctness probe before each load checks for exact 200s.
        non_2xx=summary["status"],
        latency_ms={name: summary[name] / 1000.0
                    for name in ("p50", "p90", "p99", "p999", "max", "mean")},
        send_lag_ms={name: summary[f"lag_{name}_ms"] for name in ("p50", "p99", "p999")}
        if summary["paced_sends"] else {},
        command=command,
    )


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0].partition(" Copyright")[0] if text else "unknown"
