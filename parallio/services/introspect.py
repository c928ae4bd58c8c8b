"""Introspection: PyParallel's ``active_contexts``, ``socket_stats``,
``context_stats``, ``rdtsc`` and ``gmtime``, and a Prometheus rendering.

Each counting function answers for the worker it is called in, or, on the
main thread, for all workers of the running runtime (summed; it asks each
worker, so it costs a round trip to each). :func:`prometheus_text` renders
every worker's counters in a worker too, from counters the workers send the
main thread every second while they serve, so an HTTP route can return it::

    class Metrics(parallio.http.HttpProtocol):   # or any http11 protocol
        def metrics(self, transport, data):
            return parallio.prometheus_text().encode()   # bytes: text/plain

``rdtsc()`` is :func:`time.perf_counter_ns`: the cheapest monotonic,
nanosecond clock stock Python has (the TSC itself is not reachable from
Python); use it to time code, not to tell the time of day.
"""

from __future__ import annotations

import time
from typing import Any

from .._httpdate import http_date
from ._hub import MainHub, WorkerHub, current_hub, on_main_setup, on_worker_setup, worker_hub
from .mainthread import call_from_main_thread_and_wait

__all__ = ["active_contexts", "socket_stats", "context_stats", "rdtsc", "gmtime",
           "prometheus_text", "PROMETHEUS_CONTENT_TYPE", "STATS_PUSH_INTERVAL"]

#: The Content-Type of :func:`prometheus_text`'s output.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds between two reports of a serving worker's counters to the main
#: thread (what :func:`prometheus_text` renders in a worker).
STATS_PUSH_INTERVAL = 1.0

rdtsc = time.perf_counter_ns

_SOCKET_KEYS = ("listeners", "connections", "connections_total", "bytes_in", "bytes_out")
_CONTEXT_KEYS = ("callbacks", "callback_errors", "work_submitted", "work_done", "work_errors",
                 "work_queued", "map_chunks", "timers", "timer_ticks", "main_calls")

_last_date: tuple[bytes, str] = (b"", "")


def gmtime() -> str:
    """The current time as an HTTP date (``Sun, 06 Nov 1994 08:49:37 GMT``),
    formatted at most once a second: the value of the ``Date`` header
    parallio's HTTP responses carry."""
    global _last_date
    value = http_date()
    cached = _last_date
    if cached[0] is not value:
        cached = _last_date = (value, value.decode())
    return cached[1]


def _local_stats(hub: WorkerHub) -> dict[str, Any]:
    return hub.worker.stats()


def _all_stats() -> list[dict[str, Any]]:
    hub = current_hub()
    if hub is None:
        return []
    return hub.runtime.stats()


def _summed(keys: tuple[str, ...]) -> dict[str, int]:
    hub = worker_hub()
    every = [_local_stats(hub)] if hub is not None else _all_stats()
    return {key: sum(stats.get(key, 0) for stats in every) for key in keys}


def active_contexts() -> int:
    """Parallel contexts alive now: open connections, queued or running work
    items and started timers -- of this worker, or of all workers on the
    main thread (0 when none run)."""
    counts = _summed(("connections", "work_queued", "timers"))
    return sum(counts.values())


def socket_stats() -> dict[str, int]:
    """Listening sockets, open connections, connections so far and bytes in
    and out: of this worker, or summed over all workers on the main thread."""
    return _summed(_SOCKET_KEYS)


def context_stats() -> dict[str, int]:
    """Callbacks run and failed, work items submitted, done and failed,
    map chunks, timers and their ticks, main-thread calls: of this worker,
    or summed over all workers on the main thread."""
    return _summed(_CONTEXT_KEYS)


# -- Prometheus ---------------------------------------------------------------------------

_METRICS: dict[str, tuple[str, str]] = {
    "connections": ("gauge", "Open connections."),
    "listeners": ("gauge", "Listening sockets."),
    "work_queued": ("gauge", "Work items and map chunks waiting or running."),
    "timers": ("gauge", "Started timers."),
    "connections_total": ("counter", "Connections accepted or made."),
    "bytes_in": ("counter", "Bytes received."),
    "bytes_out": ("counter", "Bytes sent."),
    "callbacks": ("counter", "Protocol callbacks run."),
    "callback_errors": ("counter", "Protocol callbacks that raised."),
    "work_submitted": ("counter", "Work items submitted."),
    "work_done": ("counter", "Work items finished."),
    "work_errors": ("counter", "Work items whose exception nobody handled."),
    "map_chunks": ("counter", "Chunks of parallio.map computed."),
    "timer_ticks": ("counter", "Timer ticks run."),
    "main_calls": ("counter", "Calls made to the main thread."),
}
_LABELS = ("worker", "host", "io")


def _label(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def prometheus_text(stats: list[dict[str, Any]] | None = None) -> str:
    """Per-worker counters in the Prometheus text exposition format 0.0.4
    (serve it as :data:`PROMETHEUS_CONTENT_TYPE`).

    Args:
      stats: what to render, as :func:`parallio.stats` returns it; by
        default, every worker's counters (in a worker: the last ones the
        others reported, at most :data:`STATS_PUSH_INTERVAL` old, and its
        own now).
    """
    if stats is None:
        hub = worker_hub()
        if hub is None:
            stats = _all_stats()
        else:
            mine = _local_stats(hub)
            others = call_from_main_thread_and_wait(_pushed_stats, ())
            stats = [s for s in others if s.get("worker") != mine["worker"]] + [mine]
            stats.sort(key=lambda s: s.get("worker", 0))
    lines = ["# HELP parallio_workers Workers reporting.", "# TYPE parallio_workers gauge",
             f"parallio_workers {len(stats)}"]
    for key, (kind, help_text) in _METRICS.items():
        if not any(key in s for s in stats):
            continue
        name = f"parallio_{key}"
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for s in stats:
            if key in s:
                labels = ",".join(f"{label}={_label(s[label])}" for label in _LABELS
                                  if label in s)
                lines.append(f"{name}{{{labels}}} {s[key]}")
    return "\n".join(lines) + "\n"


def _pushed_stats() -> list[dict[str, Any]]:
    """On the main thread: the counters serving workers last reported."""
    hub = current_hub()
    if hub is None:
        return []
    return list(hub.service(_PushedStats).values())


class _PushedStats(dict):
    """The counters each serving worker last reported, by worker position."""


def _setup_main(hub: MainHub) -> None:
    pushed = hub.install(_PushedStats())

    def on_push(seq_id: int, stats: dict[str, Any]) -> None:
        pushed[seq_id] = stats

    hub.runtime.add_message_handler("svc_stats", on_push)
    hub.on_gone(lambda seq_id: pushed.pop(seq_id, None))


def _setup_worker(hub: WorkerHub) -> None:
    listeners = hub.worker.listeners
    hub.worker.stats_providers.append(lambda: {"listeners": len(listeners)})
    if not any(endpoint.kind == "server" for endpoint in hub.worker.spec.endpoints):
        return  # a worker that serves no route has no one to render them for

    def push() -> None:
        hub.send(("svc_stats", _local_stats(hub)))
        hub.worker.call_later(STATS_PUSH_INTERVAL, push)

    hub.worker.call_later(0, push)


on_main_setup(_setup_main)
on_worker_setup(_setup_worker)
