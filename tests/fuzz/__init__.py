"""Coverage-guided fuzzing (atheris) of everything that parses what a client sends.

Layout:

* ``harness.py`` -- the registry (:func:`~tests.fuzz.harness.harness`), the
  input decoder harnesses share (:class:`~tests.fuzz.harness.FuzzInput`) and
  seed loading. Needs nothing but the standard library.
* ``http_harnesses.py`` -- the HTTP harnesses: request parser, chunked
  decoder, Range parser, static-file paths, response header writer, parser
  against h11.
* ``corpus/<harness>/`` -- committed seed inputs, one file each: hand-written
  ones with descriptive names (``finding-*``: what the fuzzers found), and
  what long runs reached beyond them (``--merge``; SHA-1 names).
* ``dictionaries/`` -- libFuzzer dictionaries (tokens the code branches on).
* ``__main__.py`` -- ``python -m tests.fuzz`` (what ``scripts/fuzz`` runs): fuzz
  with atheris, replay files through a harness without it, or merge a long
  run's corpus into the committed seeds.
* ``_worker.py`` -- one atheris process per harness (atheris fuzzes one target
  per process and instruments modules as they are first imported).

Adding a harness (the WebSocket frame codec, when it lands) takes a module
with a decorated function and one line in :data:`~tests.fuzz.harness.HARNESS_MODULES`::

    # tests/fuzz/websocket_harnesses.py
    from .harness import FuzzInput, harness

    @harness("websocket-frames", max_len=4096)
    def websocket_frames(data: bytes) -> None:
        fuzz = FuzzInput(data)
        ...  # decode frames from fuzz.rest(); raise AssertionError on a broken invariant

plus a folder ``corpus/websocket-frames/`` with a few seed files. The replay
test (``tests/test_fuzz_smoke.py``) and ``scripts/fuzz`` pick it up from the
registry.
"""
