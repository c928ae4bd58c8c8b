"""The fuzz harnesses (tests/fuzz) in CI: every seed through every harness,
on any Python; then, where atheris installs, a short coverage-guided pass of
each harness, about 30 s in all on an idle machine (scripts/fuzz runs the
long ones)."""

from __future__ import annotations

import importlib.util
import os

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
@pytest.mark.long
@pytest.mark.timeout(300)  # it is bounded by its own time limits; this is for a loaded machine
def test_short_fuzzing_pass(tmp_path) -> None:
    seconds = max(1, FUZZING_SECONDS // len(HARNESSES))
    # A fixed libFuzzer seed: the same inputs on every run, as far as the time bound allows.
    results = [fuzz(harness, tmp_path, RUNS, seconds, ["-seed=1"]) for harness in HARNESSES.values()]
    print("\n".join(result.line() for result in results))
    assert all(result.ok for result in results), "\n".join(r.line() for r in results if not r.ok)
    assert all(result.inputs for result in results), "\n".join(r.line() for r in results)


def _old_range_number(digits: str):
    # The defect fixed in static.py: over 19 digits, leading zeros included, meant "huge".
    return 10 ** 19 if len(digits) > 19 else int(digits) if digits.isdigit() else None


def _any_value(value):
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def _any_path(self, path: bytes) -> bytes:
    return os.path.realpath(path)


@pytest.mark.parametrize("name, seed, target, replacement", [
    ("http-range", "suffix-leading-zeros", "parallio.http.static._number", _old_range_number),
    ("http-static-paths", "root-_link-out", "parallio.http.static.StaticFiles._inside", _any_path),
    ("http-response-headers", "splitting", "parallio.http.response.check_header_value", _any_value),
])
def test_harnesses_catch_the_defects_they_are_for(monkeypatch, name, seed, target, replacement) -> None:
    """Each harness fails on its seed once the code under test has the defect
    the harness guards against (the old Range numbers, no root check,
    no header value check)."""
    harness = HARNESSES[name]
    data = (harness.seed_dir / seed).read_bytes()
    harness.target(data)
    monkeypatch.setattr(target, replacement)
    with pytest.raises(AssertionError):
        harness.target(data)
