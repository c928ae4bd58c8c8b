"""From a run's rows to the targets, the markdown tables and the chart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .harness import MANY_CONNECTIONS, PIPELINE_DEPTH, QUIET_BUSY
from .servers import MALFORMED_HEADS

Rows = list[dict[str, Any]]

# A paced run that reached less than this share of its target rate is
# marked "short": the server (or wrk) could not keep up.
RATE_TOLERANCE = 0.95


def select(rows: Rows, scenario: str, status: str | None = "ok", **variant: Any) -> Rows:
    return [row for row in rows if row["scenario"] == scenario
            and (status is None or row["status"] == status)
            and all(row["variant"].get(key) == value for key, value in variant.items())]


def family_row(rows: Rows, family: str, app: str | None = None) -> dict[str, Any] | None:
    return next((row for row in rows if row["family"] == family
                 and (app is None or row.get("app") == app)), None)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def median(row: dict[str, Any] | None, metric: str) -> float | None:
    """A row's median ``metric`` (None without a row or that figure)."""
    return None if row is None else row["median"].get(metric)


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _combo(default: str | None) -> str | None:
    # Runs before the HttpServer and WSGI contenders stored the whole name.
    return default.removeprefix("parallio ") if default else None


# -- the targets (issue 9) -----------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One figure of a target: a parallio row of ``app`` in ``scenario``
    (its variant matching ``variant``) against the ``base`` peer's row of
    the same variant, or against nothing (``base=None``: the figure itself,
    in ``unit``)."""

    label: str
    scenario: str
    variant: dict[str, Any]
    app: str
    metric: str
    threshold: float
    base: tuple[str, str | None] | None = ("asyncio", None)  # (family, app)
    lower_is_better: bool = False
    unit: str = "x"
    scale: float = 1.0

    def value(self, rows: Rows, row: dict[str, Any]) -> float | None:
        figure = row["median"].get(self.metric)
        if figure is None:
            return None
        if self.base is None:
            return figure * self.scale
        base = self.base_row(rows)
        return ratio(figure, median(base, self.metric))

    def base_row(self, rows: Rows) -> dict[str, Any] | None:
        assert self.base is not None
        return family_row(select(rows, self.scenario, **self.variant), *self.base)

    def met(self, value: float) -> bool:
        return value <= self.threshold if self.lower_is_better else value >= self.threshold

    def margin(self, value: float) -> float:
        if self.lower_is_better:
            # Nothing measured (an idle connection that added no RSS) beats
            # any threshold.
            return self.threshold / value if value > 0 else float("inf")
        return value / self.threshold

    def text(self, value: float | None) -> str:
        if value is None:
            return "–"
        return fmt_ratio(value) if self.unit == "x" else f"{value:.1f} {self.unit}"


@dataclass(frozen=True)
class Target:
    id: str
    scenario: str  # as issue 9 names it
    goal: str
    parts: tuple[Part, ...]
    #: Peers' figures shown beside (idle memory): (family, app) of the base.
    beside: tuple[tuple[str, str | None], ...] = field(default=())

    def measured(self, rows: Rows) -> dict[str, list[float]]:
        """HOST/ENGINE -> the value of each part, for the parallio
        combinations measured in every part."""
        values: dict[str, list[float | None]] = {}
        for index, part in enumerate(self.parts):
            if part.base is not None and part.base_row(rows) is None:
                continue
            for row in select(rows, part.scenario, **part.variant):
                if row["family"] == "parallio" and row.get("app", "fastpath") == part.app:
                    combo = _combo(row.get("combo")) or _combo(row["contender"]) or ""
                    values.setdefault(combo, [None] * len(self.parts))[index] = \
                        part.value(rows, row)
        return {combo: [value for value in figures if value is not None]
                for combo, figures in values.items() if None not in figures}

    def describe(self, values: list[float]) -> str:
        return ", ".join(f"{part.label} {part.text(value)}".strip()
                         for part, value in zip(self.parts, values, strict=True))

    def worst_margin(self, values: list[float]) -> float:
        return min(part.margin(value) for part, value in zip(self.parts, values, strict=True))

    def met(self, values: list[float]) -> bool:
        return all(part.met(value) for part, value in zip(self.parts, values, strict=True))


def _targets_table(cores: int) -> list[Target]:
    unique = {"heads": "unique"}
    widest = min(2, cores)
    scaling = {"workers": widest}
    return [
        Target("T1", "/plaintext and /json, fast path, 1 worker, vs the asyncio peer", ">=1.3x",
               (Part("/plaintext", "per_core", dict(unique, route="plaintext"), "fastpath",
                     "capacity_rps", 1.3),
                Part("/json", "per_core", dict(unique, route="json"), "fastpath",
                     "capacity_rps", 1.3))),
        Target("T2", "same vs uvloop (same peer code)", ">=1.1x",
               (Part("/plaintext", "per_core", dict(unique, route="plaintext"), "fastpath",
                     "capacity_rps", 1.1, base=("uvloop", None)),
                Part("/json", "per_core", dict(unique, route="json"), "fastpath",
                     "capacity_rps", 1.1, base=("uvloop", None)))),
        Target("T3", "HttpServer routes vs asyncio peer", ">=1.2x",
               (Part("/plaintext", "routes", dict(unique, route="plaintext"), "routes",
                     "capacity_rps", 1.2),)),
        Target("T4", "WSGI (plain callable) vs granian WSGI, 1 worker", ">=1.0x",
               (Part("/plaintext", "wsgi", dict(unique, route="plaintext"), "wsgi",
                     "capacity_rps", 1.0, base=("granian", "wsgi")),)),
        Target("T5", f"{PIPELINE_DEPTH} pipelined requests vs asyncio peer", ">=1.2x",
               (Part("/plaintext", "pipeline", dict(unique, depth=PIPELINE_DEPTH), "fastpath",
                     "capacity_rps", 1.2),)),
        Target("T6", f"{MANY_CONNECTIONS:,} keep-alive connections vs asyncio peer (req/s)",
               ">=1.3x",
               (Part("/plaintext", "connections", dict(unique, connections=MANY_CONNECTIONS),
                     "fastpath", "rps", 1.3),)),
        Target("T7", "memory per idle keep-alive connection", "<=1.5 KiB",
               (Part("", "idle", {}, "fastpath", "bytes_per_connection", 1.5, base=None,
                     lower_is_better=True, unit="KiB", scale=1 / 1024),),
               beside=(("asyncio", None), ("nginx", None))),
        Target("T8", "4 KiB / 1 MiB static file vs nginx 1 worker", ">=0.5x / >=0.8x",
               (Part("4 KiB", "static", {"route": "static4k"}, "fastpath", "capacity_rps", 0.5,
                     base=("nginx", None)),
                Part("1 MiB", "static", {"route": "static1m"}, "fastpath", "capacity_rps", 0.8,
                     base=("nginx", None)))),
        Target("T9", f"{widest} workers in one process vs asyncio peer with {widest} processes, "
               "/plaintext and /cpu", ">=1.2x (/plaintext), >=1.0x (/cpu)",
               (Part("/plaintext", "scaling", dict(scaling, route="plaintext"), "fastpath",
                     "capacity_rps", 1.2),
                Part("/cpu req/s", "scaling", dict(scaling, route="cpu"), "fastpath", "rps",
                     1.0))),
    ]


def targets(rows: Rows, cores: int, default: str | None = None) -> list[dict[str, Any]]:
    """Issue 9's targets: the measured figures and met True/False (None: not
    measured).

    Each is judged on ``default``, the host/engine that ``auto`` picks on
    this Python (what a user gets), when it ran; the best parallio
    combination is named beside it. Judging on the best of several noisy
    figures would flatter parallio."""
    default = _combo(default)
    results = []
    for target in _targets_table(cores):
        entry: dict[str, Any] = dict(id=target.id, scenario=target.scenario, goal=target.goal)
        measured = target.measured(rows)
        if not measured:
            entry.update(met=None, result=_why_not(rows, target))
            results.append(entry)
            continue
        best = max(measured, key=lambda combo: target.worst_margin(measured[combo]))
        chosen = default if default in measured else best
        text = f"{chosen}: {target.describe(measured[chosen])}"
        if best != chosen:
            text += f" (best: {best}, {target.describe(measured[best])})"
        first = target.parts[0]
        for family, app in target.beside:
            peer = family_row(select(rows, first.scenario, **first.variant), family, app)
            if peer is not None:
                text += f"; {family} {first.text(first.scale * peer['median'][first.metric])}"
        entry.update(met=target.met(measured[chosen]), result=text, contender=chosen)
        results.append(entry)
    return results


def _why_not(rows: Rows, target: Target) -> str:
    scenario = target.parts[0].scenario
    ran = select(rows, scenario, status=None)
    if not ran:
        return f"{scenario} not run"
    for part in target.parts:
        if not select(rows, part.scenario, status=None, **part.variant):
            return f"{scenario} {part.label} not measured in this run".replace("  ", " ")
        if part.base is not None and part.base_row(rows) is None:
            peer = " ".join(filter(None, part.base))
            reason = next((row["reason"] for row in ran if row["family"] == part.base[0]
                           and row["status"] != "ok"), "")
            return f"{peer} did not run" + (f": {reason.splitlines()[0]}" if reason else "")
    reasons = {row["reason"].splitlines()[0] for row in ran
               if row["family"] == "parallio" and row["status"] != "ok" and row["reason"]}
    return "; ".join(sorted(reasons)) or "no parallio contender ran"


# -- markdown ---------------------------------------------------------------

def _table(header: list[str], lines: list[list[str]], text_columns: int = 1) -> list[str]:
    """A markdown table: the first ``text_columns`` left-aligned, figures
    right-aligned."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(line) + " |" for line in lines)]


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _errors(median: dict[str, Any]) -> str:
    errors, non_2xx = median.get("errors", 0), median.get("non_2xx", 0)
    return "0" if not errors and not non_2xx else f"**{errors} errors, {non_2xx} non-2xx**"


def _not_run(rows: Rows) -> list[str]:
    seen, lines = set(), []
    for row in rows:
        if row["status"] != "ok" and row["contender"] not in seen:
            seen.add(row["contender"])
            lines.append(f"- {row['contender']}: {row['status']}: {row['reason'].splitlines()[0]}")
    return [""] + lines if lines else []


def _section(title: str, rows: Rows, header: list[str],
             line: Callable[[dict[str, Any]], list[str]], note: str = "") -> list[str]:
    if not rows:  # a scenario this run left out
        return []
    ran = [row for row in rows if row["status"] == "ok"]
    body = _table(header, [line(row) for row in ran], text_columns=2) if ran \
        else ["(nothing ran)"]
    return ["", f"### {title}", "", *([note, ""] if note else []), *body, *_not_run(rows)]


def request_label(variant: dict[str, Any]) -> str:
    """What a row's wrk asked, as the tables say it."""
    text = f"/{variant['route']}" if "route" in variant else ""
    if variant.get("heads") == "identical":
        text += " (plain wrk: identical heads)"
    if "depth" in variant:
        text += f" x{variant['depth']} pipelined"
    if "connections" in variant and "route" in variant and variant.get("workers", 1) == 1:
        text += f", {variant['connections']:,} connections"
    return text


def _base(rows: Rows, row: dict[str, Any], family: str, app: str | None = None,
          same_workers: bool = True) -> dict[str, Any] | None:
    """The ``family`` peer's row with ``row``'s variant (workers too, unless
    ``same_workers`` is False: then its one-worker row)."""
    variant = dict(row["variant"])
    if not same_workers:
        variant["workers"] = 1
    return next((other for other in rows if other["scenario"] == row["scenario"]
                 and other["family"] == family and other["status"] == "ok"
                 and (app is None or other.get("app") == app)
                 and other["variant"] == variant), None)


def _vs(rows: Rows, row: dict[str, Any], metric: str, family: str,
        app: str | None = None, same_workers: bool = True) -> str:
    base = _base(rows, row, family, app, same_workers)
    return fmt_ratio(ratio(row["median"].get(metric), median(base, metric)))


def _load_section(rows: Rows, scenario: str, title: str, *, metric: str = "capacity_rps",
                  peers: tuple[tuple[str, str | None], ...] = (("asyncio", None),),
                  rps_label: str = "req/s", note: str = "") -> list[str]:
    chosen = select(rows, scenario, status=None)
    header = ["contender", "request", rps_label, "req per CPU-s",
              *(f"vs {' '.join(filter(None, peer))}" for peer in peers),
              "CPU µs per req (user+sys)", "p99 ms", "peak RSS MB", "errors"]
    return _section(title, chosen, header, lambda row: [
        row["contender"], request_label(row["variant"]), _num(row["median"]["rps"]),
        _num(row["median"]["capacity_rps"]),
        *(_vs(rows, row, metric, *peer) for peer in peers),
        f"{row['median']['cpu_us_per_request']:.1f} "
        f"({_us(row, 'cpu_user_s')}+{_us(row, 'cpu_sys_s')})",
        _num(row["median"].get("p99_ms"), 2), _num(row["median"]["peak_rss_mb"], 1),
        _errors(row["median"])], note)


def _us(row: dict[str, Any], key: str) -> str:
    requests = max(row["median"].get("requests", 0), 1)
    return f"{row['median'][key] / requests * 1e6:.1f}"


#: The figure each scenario is compared on, across runs, as a ratio to
#: asyncio in the same run (absolute figures drift too much between runs on
#: these machines): per scenario, the metric and whether lower is better.
HEADLINE = {
    "per_core": ("capacity_rps", False),
    "routes": ("capacity_rps", False),
    "wsgi": ("capacity_rps", False),
    "pipeline": ("capacity_rps", False),
    "connections": ("rps", False),
    "scaling": ("rps", False),
    "static": ("capacity_rps", False),
    "idle": ("bytes_per_connection", True),
    "latency": ("p99_ms", True),
}


def _variant_label(variant: dict[str, Any]) -> str:
    # Runs before the unique-heads script had no "heads": their figures
    # (identical heads) must not be compared with unique-heads ones.
    parts = [request_label(variant), "unique heads" if variant.get("heads") == "unique" else ""]
    if "load" in variant:
        parts.append(f"{variant['load']:.0%} load")
    parts.append(f"x{variant['workers']}")
    return " ".join(part for part in parts if part)


def headline_ratios(rows: Rows) -> dict[tuple[str, str, str], float]:
    """(scenario, variant label, contender) -> headline figure / asyncio's
    with the same variant and workers."""
    ratios = {}
    for row in rows:
        if row["status"] != "ok" or row["family"] == "asyncio" or row["scenario"] not in HEADLINE:
            continue
        metric, _lower = HEADLINE[row["scenario"]]
        base = _base(rows, row, "asyncio")
        value = ratio(row["median"].get(metric), median(base, metric))
        if value is not None:
            ratios[(row["scenario"], _variant_label(row["variant"]), row["contender"])] = value
    return ratios


def comparison(results: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    """The parallio rows' headline ratios to asyncio, this run against
    ``previous``."""
    now, then = headline_ratios(results["rows"]), headline_ratios(previous["rows"])
    lines = []
    for key in sorted(now.keys() & then.keys()):
        scenario, variant, contender = key
        if not contender.startswith("parallio"):
            continue
        metric, lower = HEADLINE[scenario]
        change = now[key] / then[key]
        better = change < 1 if lower else change > 1
        lines.append([scenario, variant, contender, metric, fmt_ratio(then[key]),
                      fmt_ratio(now[key]), f"{change - 1:+.0%}" + (" better" if better else "")])
    if not lines:
        return []
    return ["", f"### Against the previous run ({previous['date']}), as ratios to asyncio", "",
            *_table(["scenario", "variant", "contender", "figure", "then", "now", "change"],
                    lines, text_columns=4)]


#: What each peer family is, for the contenders table.
PEER_NOTES = {
    "asyncio": "`peers/asyncio_http.py` on the stdlib loop: one `find` per head, a few "
               "substring searches, **no validation**",
    "uvloop": "the same code on uvloop (files are read and written: uvloop has no sendfile)",
    "uvicorn": "uvicorn, httptools (llhttp) parser, uvloop, serving `apps.asgi_app`",
    "granian": "granian (Rust, hyper), serving `apps.{app}_app` over its {app} interface",
    "nginx": "nginx, 1 worker: fixed `return 200` answers and sendfile, the machine's "
             "practical limit rather than a competitor",
}
PARALLIO_NOTES = {
    "fastpath": "`python -m parallio serve parallio.bench.apps:BenchApp` (the `http11` fast "
                "path); files: `python -m parallio http-server`",
    "routes": "`python -m parallio serve parallio.bench.routes:app` (HttpServer routes)",
    "wsgi": "`python -m parallio wsgi parallio.bench.apps:wsgi_app`",
}


def _contenders_section(results: dict[str, Any]) -> list[str]:
    strictness = results.get("strictness") or {}
    if not strictness:
        return []
    kinds: dict[str, dict[str, Any]] = {}
    for row in results["rows"]:
        key = row["contender"]
        if key in strictness and key not in kinds:
            kinds[key] = row
    lines = []
    for name, row in kinds.items():
        verdict = strictness[name]
        what = PARALLIO_NOTES.get(row.get("app", ""), "") if row["family"] == "parallio" \
            else PEER_NOTES.get(row["family"], "").format(app=row.get("app", ""))
        let_through = []
        if verdict["served"]:
            let_through.append("served: " + ", ".join(verdict["served"]))
        if verdict["waited"]:
            let_through.append("no answer: " + ", ".join(verdict["waited"]))
        lines.append([name, what, f"{len(verdict['refused'])}/{len(MALFORMED_HEADS)}",
                      "; ".join(let_through) or "–"])
    return ["", "### Contenders, and how strictly each parses", "",
            f"Before any load each server got {len(MALFORMED_HEADS)} malformed `GET /plaintext` "
            "heads, one per connection (`MALFORMED_HEADS` in `parallio/bench/servers.py`: bare "
            "LF, obs-fold, a space before the colon, control bytes, no or two Host fields, ...), "
            "all of which parallio's parser refuses with 400. A server that serves them does "
            "less work per request than a strict parser: compare its figures with that in "
            "mind.", "",
            *_table(["contender", "what", "malformed heads refused", "let through"], lines,
                    text_columns=4)]


def markdown(results: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    rows: Rows = results["rows"]
    machine = results["machine"]
    settings = results["settings"]
    tools = results["tools"]
    niceness = f", at niceness {settings['nice']}" if settings.get("nice") else ""
    versions = ", ".join(f"{name} {version}" for name, version in sorted(tools.items())
                         if name not in ("wrk", "python") and version)
    default = _combo(results.get("default_contender"))
    out = [
        f"Run {results['date']} on `{machine['name']}`: {machine['cpu']}, {machine['cpus']} CPUs, "
        f"Linux {machine['kernel']}, Python {machine['python']}; {tools['wrk']}"
        + (f", {versions}" if versions else "") + ".",
        f"{settings['duration']} s per measured run, {settings['rounds']} rounds (medians; "
        f"errors summed over rounds){niceness}"
        f"{', QUICK smoke run: not a measurement' if settings['quick'] else ''}. "
        f"Whole suite: {results['elapsed_s'] / 60:.1f} min. Every request head differs from "
        "the one before (a cookie carries a counter; six fields, as TechEmpower's) unless a "
        "row says plain wrk.",
        *_background_warning(results),
        "", "### Targets (issue 9)", "",
        f"Judged on parallio `{default or 'the best combination'}`, what `--parallel auto "
        "--io auto` picks on this Python; the best combination is named where it differs. "
        "Ratios are requests per server CPU-second against the peer in the same run, except "
        "where req/s is said.", "",
        *_table(["scenario", "target", "measured", "met"],
                [[f"{t['id']}: {t['scenario']}", t["goal"], t["result"],
                  {True: "yes", False: "**no**", None: "not measured"}[t["met"]]]
                 for t in results["targets"]], text_columns=3),
    ]
    out += _contenders_section(results)
    peers = (("asyncio", None), ("uvloop", None))
    out += _load_section(
        rows, "per_core", "per_core: fast path, 1 worker on CPU 0 (shared with a busy loop), "
        "wrk on CPU 1", peers=peers, rps_label="req/s (half a core)",
        note="The plain-wrk rows (wrk's own one-field head, byte for byte the same every "
             "time) are there to show what identical heads flatter; the targets use the "
             "others.")
    out += _load_section(rows, "routes", "routes: HttpServer, 1 worker on CPU 0 (busy loop)",
                         rps_label="req/s (half a core)")
    out += _load_section(rows, "wsgi", "wsgi: a plain WSGI callable, 1 worker on CPU 0 "
                         "(busy loop)", peers=(("granian", "wsgi"), ("asyncio", None)),
                         rps_label="req/s (half a core)")
    out += _load_section(rows, "pipeline", f"pipeline: {PIPELINE_DEPTH} requests per write, "
                         "1 worker on CPU 0 (busy loop)", peers=peers,
                         rps_label="req/s (half a core)",
                         note="No latency here: wrk times a pipelined batch as one request "
                              "and its percentiles are then not meaningful.")
    out += _load_section(rows, "connections", f"connections: {MANY_CONNECTIONS:,} keep-alive "
                         "connections, 1 worker on CPU 0 (busy loop)", metric="rps",
                         peers=peers, rps_label="req/s (half a core)",
                         note="Here the ratio to the peers is of req/s.")
    out += _latency_section(results)
    out += _idle_section(rows)
    out += _load_section(rows, "static", "static: files, 1 worker on CPU 0, wrk on CPU 1 "
                         "(no busy loop)", peers=(("nginx", None), ("asyncio", None)))
    out += _scaling_section(rows)
    if previous is not None:
        out += comparison(results, previous)
    return "\n".join(out) + "\n"


def _latency_section(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    latency = select(rows, "latency", status=None)
    peak = results.get("peer_max_rps")
    title = ("latency: fixed rates, 1 worker on CPU 0, wrk on CPU 1 (paced in wrk's Lua "
             "delay() hook, unique heads)")
    if peak:
        title += f"; asyncio's maximum here: {peak:,.0f} req/s"
    return _section(
        title, sorted(latency, key=lambda row: (row["variant"]["load"], row["contender"])),
        ["contender", "load", "target req/s", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms",
         "p99 vs asyncio", "send lag p99 / p99.9 ms", "errors"],
        lambda row: [
            row["contender"], f"{row['variant']['load']:.0%}", _num(row["variant"]["rate"]),
            _num(row["median"]["rps"]) + (
                "" if row["median"]["rps"] >= RATE_TOLERANCE * row["variant"]["rate"]
                else " (short)"),
            _num(row["median"]["p50_ms"], 3), _num(row["median"]["p99_ms"], 3),
            _num(row["median"]["p999_ms"], 3), _vs(rows, row, "p99_ms", "asyncio"),
            f"{_num(row['median'].get('lag_p99_ms'), 1)} / "
            f"{_num(row['median'].get('lag_p999_ms'), 1)}",
            _errors(row["median"])],
        note="Latency runs from each request's actual send (wrk, like wrk without wrk2's "
             "correction): a send the schedule wanted earlier, because every connection was "
             "waiting, is late by its send lag, which the percentiles leave out (coordinated "
             "omission). Lag near 0 means the figures are the whole story.")


def _idle_section(rows: Rows) -> list[str]:
    idle = select(rows, "idle", status=None)
    return _section(
        "idle: keep-alive connections each asked once, then held open", idle,
        ["contender", "connections", "RSS before MB", "RSS after MB", "KiB per connection",
         "vs asyncio", "errors"],
        lambda row: [
            row["contender"], str(row["variant"]["connections"]),
            _num(row["median"]["rss_before_mb"], 1), _num(row["median"]["rss_after_mb"], 1),
            _num(row["median"]["bytes_per_connection"] / 1024, 1),
            _vs(rows, row, "bytes_per_connection", "asyncio"), _errors(row["median"])])


def _scaling_section(rows: Rows) -> list[str]:
    scaling = select(rows, "scaling", status=None)
    singles = {(row["contender"], row["variant"]["route"]): row["median"]["rps"]
               for row in select(rows, "scaling") if row["variant"]["workers"] == 1}
    return _section(
        "scaling: workers in one server, nothing pinned (asyncio: as many processes)",
        sorted(scaling, key=lambda row: (row["variant"]["route"], row["contender"],
                                         row["variant"]["workers"])),
        ["contender", "request", "workers", "req/s", "req per CPU-s", "req/s vs asyncio",
         "req per CPU-s vs asyncio", "of linear", "p99 ms", "peak RSS MB", "errors"],
        lambda row: [
            row["contender"], f"/{row['variant']['route']}", str(row["variant"]["workers"]),
            _num(row["median"]["rps"]), _num(row["median"]["capacity_rps"]),
            _vs(rows, row, "rps", "asyncio"), _vs(rows, row, "capacity_rps", "asyncio"),
            _pct(ratio(row["median"]["rps"], row["variant"]["workers"]
                       * singles.get((row["contender"], row["variant"]["route"]), 0))),
            _num(row["median"]["p99_ms"], 1), _num(row["median"]["peak_rss_mb"], 1),
            _errors(row["median"])],
        note="asyncio runs as N forked processes beside N parallio workers. On 2 cores wrk "
             "needs most of one, so /plaintext with 2 workers compares CPU per request, not "
             "scaling; /cpu (~1 ms of Python per request) compares req/s.")


def _background_warning(results: dict[str, Any]) -> list[str]:
    busiest = max((check["busy"] for check in results.get("background_busy", [])), default=0.0)
    if busiest <= QUIET_BUSY:
        return []
    return ["", f"**Other processes kept the CPUs up to {busiest:.0%} busy during this run "
                "(checked before each group of servers started): its figures are noisy.**"]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


# -- chart --------------------------------------------------------------------

def chart(results: dict[str, Any], path: Path) -> str | None:
    """Draw the PNG; returns why not when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no chart"
    rows: Rows = results["rows"]
    cores = results["machine"]["cpus"]
    unique = {"heads": "unique"}
    groups = [
        ("plaintext", select(rows, "per_core", route="plaintext", **unique), "capacity_rps"),
        ("json", select(rows, "per_core", route="json", **unique), "capacity_rps"),
        ("routes", select(rows, "routes"), "capacity_rps"),
        ("wsgi", select(rows, "wsgi"), "capacity_rps"),
        (f"x{PIPELINE_DEPTH}\npipelined", select(rows, "pipeline"), "capacity_rps"),
        (f"{MANY_CONNECTIONS} conns\nreq/s", select(rows, "connections"), "rps"),
        ("4 KiB file", select(rows, "static", route="static4k"), "capacity_rps"),
        ("1 MiB file", select(rows, "static", route="static1m"), "capacity_rps"),
        (f"/cpu x{cores}\nreq/s", select(rows, "scaling", route="cpu", workers=cores), "rps"),
    ]
    groups = [group for group in groups if family_row(group[1], "asyncio")]
    names = sorted({row["contender"].replace("routes ", "").replace("wsgi ", "")
                    for _, group, _ in groups for row in group},
                   key=lambda name: (not name.startswith("parallio"), name))
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(16, 5.5),
                                         gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        heights: list[float | None] = []
        for _, group, key in groups:
            row = next((row for row in group if row["contender"].replace("routes ", "")
                        .replace("wsgi ", "") == name), None)
            base = family_row(group, "asyncio")
            heights.append(ratio(row["median"][key], median(base, key)) if row else 0.0)
        bars.bar([g + index * width for g in range(len(groups))],
                 [h or 0.0 for h in heights], width, label=name)
    bars.axhline(1.0, color="black", linewidth=0.8)
    bars.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))],
                    [label for label, _, _ in groups])
    bars.set_ylabel("relative to asyncio in the same run (req per CPU-s unless said)")
    bars.set_title("Per scenario (unique request heads)")
    bars.legend(fontsize=7, ncol=2)

    scaling = select(rows, "scaling", route="cpu")
    for name in sorted({row["contender"] for row in scaling}):
        points = sorted((row["variant"]["workers"], row["median"]["rps"])
                        for row in scaling if row["contender"] == name)
        lines.plot([w for w, _ in points], [r for _, r in points], marker="o", label=name)
    if not scaling:
        lines.set_axis_off()
    lines.set_xlabel("workers (asyncio: processes)")
    lines.set_ylabel("requests/s, /cpu (~1 ms of Python each)")
    lines.set_xticks(range(1, cores + 1))
    lines.set_title("Scaling with workers")
    if scaling:
        lines.legend(fontsize=7)
    figure.suptitle(f"parallio bench {results['date']} on {results['machine']['name']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
