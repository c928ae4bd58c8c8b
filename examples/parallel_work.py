"""Counting primes on every core, two ways: parallio.map and submit_work.

    python examples/parallel_work.py [--limit 2000000] [--chunks 32]
                                     [--parallel auto|threads|interpreters|processes]

``parallio.map`` hands the ranges to workers and returns their counts in
order. ``submit_work`` runs one item per range; each item's callback, in the
worker that counted, adds its count to a protected dict owned by the main
thread, and ``run()`` returns once every item is done. Both totals are
checked against each other.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

try:
    import parallio
except ImportError:  # run from a checkout: parallio is the directory above
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import parallio

#: Totals of the submit_work run: the main thread's, reached from workers.
TOTALS = parallio.dict()


def count_primes(bounds: tuple[int, int]) -> int:
    """Primes in [low, high), by trial division: deliberately CPU-bound."""
    low, high = bounds
    count = 0
    for number in range(max(low, 2), high):
        if number % 2 == 0:
            count += number == 2
            continue
        for divisor in range(3, math.isqrt(number) + 1, 2):
            if number % divisor == 0:
                break
        else:
            count += 1
    return count


def add(totals: dict, count: int) -> None:
    totals["primes"] = totals.get("primes", 0) + count
    totals["ranges"] = totals.get("ranges", 0) + 1


def add_count(count: int) -> None:
    """The callback: in the worker that counted."""
    TOTALS.atomic(add, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2_000_000)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--parallel", default="auto")
    parser.add_argument("--io", default="auto")
    args = parser.parse_args()
    step = -(-args.limit // args.chunks)
    ranges = [(low, min(low + step, args.limit)) for low in range(0, args.limit, step)]

    started = time.perf_counter()
    counts = parallio.map(count_primes, ranges, workers=args.workers, parallel=args.parallel,
                          io=args.io, chunksize=1)
    mapped = time.perf_counter() - started
    print(f"map: {sum(counts)} primes below {args.limit} in {mapped:.2f} s "
          f"({len(ranges)} ranges)", flush=True)

    started = time.perf_counter()
    for bounds in ranges:
        parallio.submit_work(count_primes, (bounds,), callback=add_count)
    parallio.run(workers=args.workers, parallel=args.parallel, io=args.io)
    submitted = time.perf_counter() - started
    print(f"submit_work: {TOTALS['primes']} primes in {TOTALS['ranges']} ranges "
          f"in {submitted:.2f} s", flush=True)
    if TOTALS["primes"] != sum(counts) or TOTALS["ranges"] != len(ranges):
        raise SystemExit("the two ways disagree")


if __name__ == "__main__":
    main()
