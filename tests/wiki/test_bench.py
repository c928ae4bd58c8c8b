"""The wiki benchmark's smoke test: ``python -m parallio.wiki.bench`` with
one short round over the sample dictionary. Asserts that every server
started, answered every check query exactly as parallio does, and served
its load without an error; never a speed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ..test_cli import ROOT


@pytest.mark.long
@pytest.mark.timeout(240)
def test_bench_runs_and_every_server_answers_alike(sample_data, tmp_path):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk; scripts/test tries)")
    output = tmp_path / "wiki-bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "parallio.wiki.bench", "--data", str(sample_data),
         "--seconds", "1", "--rounds", "1", "--warmup", "0", "--no-install",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=200,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    results = json.loads(output.read_text())
    families = {row["family"] for row in results["throughput"]}
    assert families == {"parallio", "asyncio", "flask"}
    for row in results["throughput"]:
        assert "problem" not in row and row["rps"] > 0, row
        assert row["errors"] == row["non_2xx"] == 0, row
    for row in results["memory"]:
        # One copy of the index, mapped by every worker, whatever their number.
        pages = -(-results["index"]["bytes"] // os.sysconf("SC_PAGE_SIZE"))
        assert row["index_pss"] <= pages * os.sysconf("SC_PAGE_SIZE") * 1.05, row
        assert len(row["searches_per_worker"]) == row["workers"], row
    assert "### /search throughput" in completed.stdout
