"""The benchmark suite's smoke test: ``python -m parallio.bench --quick``.

Asserts that the harness runs every scenario end to end and that every
contender that ran answered correctly with no errors; never a speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_quick_bench_runs_and_every_server_answers(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk; scripts/test tries)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    completed = subprocess.run(
        [sys.executable, "-m", "parallio.bench", "--quick", "--no-install",
         "--output", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    # The suite's progress lines say which server did what.
    progress = completed.stderr[-4000:]
    assert completed.returncode == 0, progress

    [results_file] = tmp_path.glob("*.json")
    results = json.loads(results_file.read_text())
    rows = results["rows"]
    assert [row for row in rows if row["status"] == "failed"] == [], progress
    ran = [row for row in rows if row["status"] == "ok"]
    for row in ran:
        assert row["trials"], (row, progress)
        assert row["median"]["errors"] == 0, (row, progress)
        assert row["median"]["non_2xx"] == 0, (row, progress)
    # Every scenario measured something, and asyncio (always there) took
    # part in each.
    for scenario in ("per_core", "latency", "idle", "static", "scaling"):
        families = {row["family"] for row in ran if row["scenario"] == scenario}
        assert "asyncio" in families, scenario
    # Skips say why.
    assert all(row["reason"] for row in rows if row["status"] == "skipped")
    assert (tmp_path / results_file.with_suffix(".md").name).read_text().count("###") >= 6
    assert {target["id"] for target in results["targets"]} == {"P1", "P2", "P3", "P4"}
