#!/usr/bin/env python3
"""One harness under atheris, in a process of its own (atheris fuzzes one
target per process, and instruments only modules imported after it starts).

    PARALLIO_FUZZ_HARNESS=NAME python -m tests.fuzz._worker [libFuzzer flags] CORPUS_DIR...

``python -m tests.fuzz`` runs this. The harness is named in the environment
and this file is executable so that libFuzzer can run it again as it is
(``-set_cover_merge=1``, ``-fork`` start it as ``argv[0] flags...``), with the
interpreter's folder first on PATH and the repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys

import atheris

HARNESS_VARIABLE = "PARALLIO_FUZZ_HARNESS"


def main() -> None:
    name = os.environ[HARNESS_VARIABLE]
    # Comparisons inside str.startswith/endswith guide the mutator too. (The
    # RegEx hook is not used: it fails on bytes patterns.)
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["parallio.http", "h11", "tests.fuzz", "tests.http"]):
        from tests.fuzz.harness import harnesses

        target = harnesses()[name].target
    atheris.Setup([os.path.abspath(__file__), *sys.argv[1:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
