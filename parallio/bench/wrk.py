"""Driving wrk and reading back every figure it has.

A Lua ``done`` hook prints the summary as one JSON line (wrk's own text
output has no p99.9). For fixed-rate runs the script also defines
``delay()``: wrk calls it before each request after the first on a
connection, and it hands out send times from one schedule per wrk thread
(``start + k * interval``), the way wrk2 paces requests. Latency is still
measured from the actual send, not from the scheduled time (wrk2 corrects
for that: coordinated omission), so a server that falls behind looks
better here than under wrk2; ``achieved_rate`` shows when that happened.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass

_MARKER = "BENCH-SUMMARY "

_DONE_HOOK = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
""".replace("MARKER", _MARKER)

# %(interval_ms)s is the time between two sends of one wrk thread.
_PACING = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local now_spec = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, now_spec)  -- CLOCK_MONOTONIC
  return tonumber(now_spec.tv_sec) * 1000 + tonumber(now_spec.tv_nsec) / 1e6
end
local interval = %(interval_ms)r
local next_send = nil
function delay()
  local now = now_ms()
  if next_send == nil then next_send = now end
  next_send = next_send + interval
  local wait = next_send - now
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)  -- wrk's timers count whole milliseconds
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    bytes: int
    socket_errors: dict[str, int]
    non_2xx: int
    latency_ms: dict[str, float]
    command: list[str]

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


class WrkError(RuntimeError):
    """wrk failed or printed no summary."""


def run_wrk(wrk: str, url: str, *, connections: int, duration_s: int, threads: int = 1,
            cpus: str | None = None, rate: float | None = None,
            timeout_s: int = 5, lua: str = "") -> WrkResult:
    """Load ``url`` for ``duration_s`` whole seconds (wrk takes no fractions)
    with ``connections`` keep-alive connections; at ``rate`` requests/s in
    all when given, else as fast as the server answers. ``cpus`` pins wrk
    (a taskset list). ``lua`` is added to wrk's script: a ``request()``
    hook that varies the requests, say."""
    script = _DONE_HOOK + lua
    if rate is not None:
        script += _PACING % {"interval_ms": 1000.0 * threads / rate}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as lua:
        lua.write(script)
        lua.flush()
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
                   f"--timeout={timeout_s}s", "-s", lua.name, url]
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
        command=command,
    )


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0].partition(" Copyright")[0] if text else "unknown"
