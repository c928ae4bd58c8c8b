"""The fuzz harnesses (tests/fuzz) in CI: every seed through every harness,
on any Python; then, where atheris installs, a short coverage-guided pass of
each harness, about 30 s in all on an idle machine (scripts/fuzz runs the
long ones)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.fuzz.__main__ import fuzz
from tests.fuzz.harness import harnesses

HARNESSES = harnesses()
#: Fuzzing time of the whole short pass, shared by the harnesses (each also
#: stops after RUNS inputs); each adds a second or two to start.
FUZZING_SECONDS = 12
RUNS = 3000


@pytest.mark.parametrize("name", HARNESSES)
def test_seed_corpus_replays(name: str) -> None:
    harness = HARNESSES[name]
    assert any(harness.seed_dir.iterdir()), f"no committed seeds in {harness.seed_dir}"
    failures = []
    for seed, data in harness.seeds():
        try:
            harness.target(data)
        except Exception as error:  # noqa: BLE001 -- any exception is a finding
            failures.append(f"{seed}: {error!r}"[:400])
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris has no wheel for this Python or platform")
@pytest.mark.timeout(180)
def test_short_fuzzing_pass(tmp_path) -> None:
    seconds = max(1, FUZZING_SECONDS // len(HARNESSES))
    # A fixed libFuzzer seed: the same inputs on every run, as far as the time bound allows.
    results = [fuzz(harness, tmp_path, RUNS, seconds, ["-seed=1"]) for harness in HARNESSES.values()]
    print("\n".join(result.line() for result in results))
    assert all(result.ok for result in results), "\n".join(r.line() for r in results if not r.ok)
    assert all(result.inputs for result in results), "\n".join(r.line() for r in results)
