"""One harness under atheris, in a process of its own (atheris fuzzes one
target per process, and instruments only modules imported after it starts).

    python -m tests.fuzz._worker HARNESS [libFuzzer flags] CORPUS_DIR...

``python -m tests.fuzz`` runs this; run it by hand for libFuzzer features the
runner does not wrap, e.g. ``-merge=1 NEW_DIR OLD_DIR`` to minimise a corpus.
"""

from __future__ import annotations

import sys

import atheris


def main() -> None:
    name, *arguments = sys.argv[1:]
    # Comparisons inside str.startswith/endswith guide the mutator too. (The
    # RegEx hook is not used: it fails on bytes patterns.)
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["parallio.http", "h11", "tests.fuzz", "tests.http"]):
        from tests.fuzz.harness import harnesses

        target = harnesses()[name].target
    atheris.Setup([sys.argv[0], *arguments], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
