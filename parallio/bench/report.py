"""From a run's rows to the targets, the markdown tables and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .harness import QUIET_BUSY

Rows = list[dict[str, Any]]

# A paced run that reached less than this share of its target rate is
# marked "short": the server (or wrk) could not keep up.
RATE_TOLERANCE = 0.95

TARGETS = {
    "P1": "plaintext on 1 core >= 1.3x asyncio and >= 1.1x uvloop (requests per server CPU-second)",
    "P2": "CPU-heavy handler on 2 workers >= 1.9x asyncio (one loop); on more cores, "
          "scaling within 10% of linear",
    "P3": "p99 at 80% load no worse than asyncio's",
    "P4": "1 MB static file >= 0.8x nginx (requests per server CPU-second)",
}
TARGET_SCENARIOS = {"P1": "per_core", "P2": "scaling", "P3": "latency", "P4": "static"}


def select(rows: Rows, scenario: str, status: str | None = "ok", **variant: Any) -> Rows:
    return [row for row in rows if row["scenario"] == scenario
            and (status is None or row["status"] == status)
            and all(row["variant"].get(key) == value for key, value in variant.items())]


def family_row(rows: Rows, family: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["family"] == family), None)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def best(rows: Rows, key: str, lowest: bool = False) -> dict[str, Any] | None:
    parallio = [row for row in rows if row["family"] == "parallio" and key in row["median"]]
    if not parallio:
        return None
    choose = min if lowest else max
    return choose(parallio, key=lambda row: row["median"][key])


def _skipped_parallio(rows: Rows, scenario: str) -> str:
    reasons = {row["reason"] for row in select(rows, scenario, status=None)
               if row["family"] == "parallio" and row["status"] != "ok"}
    return "; ".join(sorted(reasons)) or "no parallio contender ran"


def targets(rows: Rows, cores: int, default: str | None = None) -> list[dict[str, Any]]:
    """Each target: its figures, and met True/False (None: not measured).

    A target is judged on ``default``, the parallio contender that ``auto``
    picks on this Python (what a user gets), when it ran; the best parallio
    contender is named beside it. Judging on the best of several noisy
    figures would flatter parallio."""

    def judge(target: str, candidates: Rows, key: str, describe: Callable[[dict], str],
              passes: Callable[[dict], bool], lowest: bool = False,
              context: str = "") -> dict[str, Any]:
        top = best(candidates, key, lowest)
        chosen = next((row for row in candidates if row["contender"] == default
                       and key in row["median"]), top)
        if chosen is None:
            return dict(id=target, met=None,
                        result=_skipped_parallio(rows, TARGET_SCENARIOS[target]))
        text = f"{chosen['contender']}: {describe(chosen)}"
        if top is not chosen:
            text += f" (best: {top['contender']}, {describe(top)})"
        return dict(id=target, met=passes(chosen), result=text + context,
                    contender=chosen["contender"])

    results = []
    plain = select(rows, "per_core", route="plaintext")
    asyncio_row, uvloop_row = family_row(plain, "asyncio"), family_row(plain, "uvloop")
    if asyncio_row:
        def vs(row: dict, base: dict | None) -> float | None:
            return base and ratio(row["median"]["capacity_rps"], base["median"]["capacity_rps"])
        results.append(judge(
            "P1", plain, "capacity_rps",
            lambda row: f"{fmt_ratio(vs(row, asyncio_row))} asyncio, " + (
                f"{fmt_ratio(vs(row, uvloop_row))} uvloop" if uvloop_row else "no uvloop"),
            lambda row: vs(row, asyncio_row) >= 1.3 and (
                uvloop_row is None or vs(row, uvloop_row) >= 1.1)))
    else:
        results.append(dict(id="P1", met=None, result="asyncio did not run"))

    scaling = select(rows, "scaling")
    one_loop = family_row([row for row in scaling if row["variant"]["workers"] == 1], "asyncio")
    singles = {row["contender"]: row["median"]["rps"] for row in scaling
               if row["variant"]["workers"] == 1}
    if one_loop and cores >= 2:
        def describe_scaling(row: dict) -> str:
            text = f"{fmt_ratio(ratio(row['median']['rps'], one_loop['median']['rps']))} asyncio"
            return text + f", {_pct(linearity(row))} of linear"

        def linearity(row: dict) -> float | None:
            return ratio(row["median"]["rps"], cores * singles.get(row["contender"], 0))

        widest = [row for row in scaling if row["variant"]["workers"] == cores]
        if cores == 2:
            results.append(judge(
                "P2", widest, "rps", describe_scaling,
                lambda row: ratio(row["median"]["rps"], one_loop["median"]["rps"]) >= 1.9))
        else:
            results.append(judge("P2", widest, "rps", describe_scaling,
                                 lambda row: (linearity(row) or 0.0) >= 0.9))
    else:
        results.append(dict(id="P2", met=None, result="asyncio did not run, or one core"))

    heavy = select(rows, "latency", load=0.8)
    asyncio_row = family_row(heavy, "asyncio")
    if asyncio_row:
        theirs = asyncio_row["median"]["p99_ms"]
        results.append(judge(
            "P3", heavy, "p99_ms",
            lambda row: f"p99 {row['median']['p99_ms']:.2f} ms",
            lambda row: row["median"]["p99_ms"] <= theirs, lowest=True,
            context=f"; asyncio {theirs:.2f} ms"))
    else:
        results.append(dict(id="P3", met=None, result="asyncio did not run"))

    static = select(rows, "static")
    nginx_row = family_row(static, "nginx")
    if nginx_row:
        def vs_nginx(row: dict) -> float:
            return row["median"]["capacity_rps"] / nginx_row["median"]["capacity_rps"]
        results.append(judge("P4", static, "capacity_rps",
                             lambda row: f"{fmt_ratio(vs_nginx(row))} nginx",
                             lambda row: vs_nginx(row) >= 0.8))
    else:
        results.append(dict(id="P4", met=None, result="nginx not measured"))
    for target in results:
        target["text"] = TARGETS[target["id"]]
    return results


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
             line: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    ran = [row for row in rows if row["status"] == "ok"]
    body = _table(header, [line(row) for row in ran]) if ran else ["(nothing ran)"]
    return ["", f"### {title}", "", *body, *_not_run(rows)]


#: The figure each scenario is compared on, across runs, as a ratio to
#: asyncio in the same run (absolute figures drift too much between runs on
#: these machines): per scenario, the metric and whether lower is better.
HEADLINE = {
    "per_core": ("capacity_rps", False),
    "scaling": ("rps", False),
    "static": ("capacity_rps", False),
    "idle": ("bytes_per_connection", True),
    "latency": ("p99_ms", True),
}


def _variant_label(variant: dict[str, Any]) -> str:
    parts = [f"/{variant['route']}" if "route" in variant else ""]
    if "load" in variant:
        parts.append(f"{variant['load']:.0%} load")
    parts.append(f"x{variant['workers']}")
    return " ".join(part for part in parts if part)


def headline_ratios(rows: Rows) -> dict[tuple[str, str, str], float]:
    """(scenario, variant label, contender) -> headline figure / asyncio's
    with the same variant (asyncio with one worker for scaling)."""
    ratios = {}
    for row in rows:
        if row["status"] != "ok" or row["family"] == "asyncio":
            continue
        metric, _lower = HEADLINE[row["scenario"]]
        base_variant = dict(row["variant"], workers=1) if row["scenario"] == "scaling" \
            else row["variant"]
        base = next((other for other in rows if other["scenario"] == row["scenario"]
                     and other["family"] == "asyncio" and other["status"] == "ok"
                     and other["variant"] == base_variant), None)
        value = base and ratio(row["median"].get(metric), base["median"].get(metric))
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


def markdown(results: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    rows: Rows = results["rows"]
    machine = results["machine"]
    settings = results["settings"]
    niceness = f", at niceness {settings['nice']}" if settings.get("nice") else ""
    out = [
        f"Run {results['date']} on `{machine['name']}`: {machine['cpu']}, {machine['cpus']} CPUs, "
        f"Linux {machine['kernel']}, Python {machine['python']}; {results['tools']['wrk']}, "
        f"nginx {results['tools']['nginx'] or 'not installed'}, "
        f"uvloop {results['tools']['uvloop'] or 'not installed'}.",
        f"{settings['duration']} s per measured run, {settings['rounds']} rounds (medians; "
        f"errors summed over rounds){niceness}"
        f"{', QUICK smoke run: not a measurement' if settings['quick'] else ''}. "
        f"Whole suite: {results['elapsed_s'] / 60:.1f} min.",
        *_background_warning(results),
        "", "### Targets", "",
        f"Judged on `{results.get('default_contender') or 'the best parallio contender'}`, "
        "what `--parallel auto --io auto` picks on this Python; the best combination is "
        "named where it differs.", "",
        *_table(["target", "result", "met"],
                [[f"{t['id']}: {t['text']}", t["result"],
                  {True: "yes", False: "**no**", None: "not measured"}[t["met"]]]
                 for t in results["targets"]], text_columns=3),
    ]

    for route in ("plaintext", "json"):
        chosen = select(rows, "per_core", status=None, route=route)
        ran = select(chosen, "per_core", route=route)
        base = family_row(ran, "asyncio")
        base_capacity = base and base["median"]["capacity_rps"]
        out += _section(
            f"1. Per core: /{route}, 1 worker on CPU 0 (shared with a busy loop), wrk on CPU 1",
            chosen,
            ["contender", "req/s (half a core)", "req per CPU-s", "vs asyncio",
             "CPU s per 10k req", "p99 ms", "peak RSS MB", "errors"],
            lambda row, base_capacity=base_capacity: [
                row["contender"], _num(row["median"]["rps"]),
                _num(row["median"]["capacity_rps"]),
                fmt_ratio(ratio(row["median"]["capacity_rps"], base_capacity)),
                _num(row["median"]["cpu_s_per_10k"], 3), _num(row["median"]["p99_ms"], 2),
                _num(row["median"]["peak_rss_mb"], 1), _errors(row["median"])])

    scaling = select(rows, "scaling", status=None)
    ran = select(rows, "scaling")
    one_loop = family_row([row for row in ran if row["variant"]["workers"] == 1], "asyncio")
    singles = {row["contender"]: row["median"]["rps"] for row in ran
               if row["variant"]["workers"] == 1}
    out += _section(
        "2. Scaling: /cpu (~1 ms of Python per request), 1..cores workers, nothing pinned",
        sorted(scaling, key=lambda row: (row["contender"], row["variant"]["workers"])),
        ["contender", "workers", "req/s", "vs asyncio (one loop)", "of linear",
         "CPU s per 10k req", "p99 ms", "peak RSS MB", "errors"],
        lambda row: [
            row["contender"], str(row["variant"]["workers"]), _num(row["median"]["rps"]),
            fmt_ratio(ratio(row["median"]["rps"], one_loop and one_loop["median"]["rps"])),
            _pct(ratio(row["median"]["rps"],
                       row["variant"]["workers"] * singles.get(row["contender"], 0))),
            _num(row["median"]["cpu_s_per_10k"], 2), _num(row["median"]["p99_ms"], 1),
            _num(row["median"]["peak_rss_mb"], 1), _errors(row["median"])])

    static = select(rows, "static", status=None)
    ran = select(rows, "static")
    base, nginx_row = family_row(ran, "asyncio"), family_row(ran, "nginx")
    out += _section(
        "3. Static 1 MiB file, 1 worker on CPU 0, wrk on CPU 1",
        static,
        ["contender", "req/s", "MB/s", "req per CPU-s", "vs asyncio", "vs nginx",
         "CPU s per 10k req", "peak RSS MB", "errors"],
        lambda row: [
            row["contender"], _num(row["median"]["rps"]), _num(row["median"]["mb_per_s"]),
            _num(row["median"]["capacity_rps"]),
            fmt_ratio(ratio(row["median"]["capacity_rps"], base and base["median"]["capacity_rps"])),
            fmt_ratio(ratio(row["median"]["capacity_rps"],
                            nginx_row and nginx_row["median"]["capacity_rps"])),
            _num(row["median"]["cpu_s_per_10k"], 2), _num(row["median"]["peak_rss_mb"], 1),
            _errors(row["median"])])

    idle = select(rows, "idle", status=None)
    base = family_row(select(rows, "idle"), "asyncio")
    out += _section(
        "4. Idle keep-alive connections (each asked once, then held open)", idle,
        ["contender", "connections", "RSS before MB", "RSS after MB", "KiB per connection",
         "vs asyncio", "errors"],
        lambda row: [
            row["contender"], str(row["variant"]["connections"]),
            _num(row["median"]["rss_before_mb"], 1), _num(row["median"]["rss_after_mb"], 1),
            _num(row["median"]["bytes_per_connection"] / 1024, 1),
            fmt_ratio(ratio(row["median"]["bytes_per_connection"],
                            base and base["median"]["bytes_per_connection"])),
            _errors(row["median"])])

    latency = select(rows, "latency", status=None)
    peak = results.get("peer_max_rps")
    title = "5. Latency at a fixed rate, 1 worker on CPU 0, wrk on CPU 1 (paced in Lua)"
    if peak:
        title += f"; asyncio's maximum here: {peak:,.0f} req/s"
    bases = {row["variant"]["load"]: row for row in select(rows, "latency")
             if row["family"] == "asyncio"}
    out += _section(
        title, sorted(latency, key=lambda row: (row["variant"]["load"], row["contender"])),
        ["contender", "load", "target req/s", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms",
         "p99 vs asyncio", "errors"],
        lambda row: [
            row["contender"], f"{row['variant']['load']:.0%}", _num(row["variant"]["rate"]),
            _num(row["median"]["rps"]) + (
                "" if row["median"]["rps"] >= RATE_TOLERANCE * row["variant"]["rate"]
                else " (short)"),
            _num(row["median"]["p50_ms"], 3), _num(row["median"]["p99_ms"], 3),
            _num(row["median"]["p999_ms"], 3),
            fmt_ratio(ratio(row["median"]["p99_ms"],
                            bases.get(row["variant"]["load"], {}).get("median", {}).get("p99_ms"))),
            _errors(row["median"])])
    if previous is not None:
        out += comparison(results, previous)
    return "\n".join(out) + "\n"


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
    groups = [
        ("plaintext\nreq/CPU-s", select(rows, "per_core", route="plaintext"), "capacity_rps"),
        ("json\nreq/CPU-s", select(rows, "per_core", route="json"), "capacity_rps"),
        ("1 MiB file\nreq/CPU-s", select(rows, "static"), "capacity_rps"),
        (f"/cpu x{cores}\nreq/s (asyncio x{cores})", [row for row in select(rows, "scaling")
                                   if row["variant"]["workers"] == cores], "rps"),
    ]
    names = sorted({row["contender"] for _, group, _ in groups for row in group},
                   key=lambda name: (not name.startswith("parallio"), name))
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        heights = []
        for _, group, key in groups:
            row = next((row for row in group if row["contender"] == name), None)
            base = family_row(group, "asyncio")
            heights.append(ratio(row["median"][key], base and base["median"][key])
                           if row else 0.0)
        bars.bar([g + index * width for g in range(len(groups))],
                 [h or 0.0 for h in heights], width, label=name)
    bars.axhline(1.0, color="black", linewidth=0.8)
    bars.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))],
                    [label for label, _, _ in groups])
    bars.set_ylabel("throughput relative to asyncio (same run)")
    bars.set_title("Throughput per scenario")
    bars.legend(fontsize=8)

    scaling = select(rows, "scaling")
    for name in sorted({row["contender"] for row in scaling}):
        points = sorted((row["variant"]["workers"], row["median"]["rps"])
                        for row in scaling if row["contender"] == name)
        lines.plot([w for w, _ in points], [r for _, r in points], marker="o", label=name)
    one_loop = family_row([row for row in scaling if row["variant"]["workers"] == 1], "asyncio")
    if one_loop:
        linear = [w * one_loop["median"]["rps"] for w in range(1, cores + 1)]
        lines.plot(range(1, cores + 1), linear, linestyle=":", color="grey",
                   label="linear from one asyncio loop")
    lines.set_xlabel("workers")
    lines.set_ylabel("requests/s, /cpu (~1 ms of Python each)")
    lines.set_xticks(range(1, cores + 1))
    lines.set_title("Scaling with workers")
    lines.legend(fontsize=8)
    figure.suptitle(f"parallio bench {results['date']} on {results['machine']['name']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
