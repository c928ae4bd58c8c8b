"""The TLS benchmark's smoke run: ``python -m parallio.bench.tls`` starts
parallio and nginx with one certificate, over TLS and plain HTTP, and
loads each; it checks every contender answered without errors, never a
speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parallio.bench.tools import find_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(None in (find_binary("wrk"), find_binary("nginx"), find_binary("openssl")),
                    reason="needs wrk, nginx and openssl (scripts/test installs them)")
@pytest.mark.long
@pytest.mark.timeout(180)
def test_tls_bench_runs():
    result = subprocess.run([sys.executable, "-m", "parallio.bench.tls", "--duration", "1",
                             "--rounds", "1", "--connections", "16"],
                            cwd=ROOT, capture_output=True, text=True, timeout=170,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("parallio TLS", "nginx TLS", "parallio plain", "nginx plain"):
        assert re.search(rf"^{name} +\d+ req/CPU-s +\d+\.\d\dx nginx", result.stdout, re.M), \
            result.stdout
