"""parallio's benchmark suite: ``python -m parallio.bench`` (see BENCHMARKS.md).

Starts each contender (parallio on every host x engine this Python has,
asyncio, uvloop, nginx), loads it with wrk in five scenarios, and writes
every raw figure, a markdown table of ratios against asyncio and a chart.
"""
