"""The services examples run from a checkout, in every host, and stop by
themselves."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(20)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(name: str, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                               cwd="/", env=env, capture_output=True, text=True, timeout=18)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_parallel_work(host):
    output = run_example("parallel_work.py", "--limit", "100000", "--chunks", "8",
                         "--workers", "2", "--parallel", host, "--io", "epoll")
    assert re.search(r"^map: 9592 primes below 100000", output, re.M)
    assert re.search(r"^submit_work: 9592 primes in 8 ranges", output, re.M)


def test_timers_daytime(host):
    output = run_example("timers_daytime.py", "--port", "0", "--seconds", "4",
                         "--workers", "2", "--parallel", host, "--io", "epoll")
    assert re.search(r"^daytime says: \w+day, \w+ \d\d, \d{4} \d\d:\d\d:\d\d", output, re.M)
    ticks = int(re.search(r"^clock ticked (\d+) time", output, re.M).group(1))
    assert ticks >= 2
