"""CPython's own asyncio tests against parallio's event loop.

    python tests/asyncio_conformance/run.py [--io auto|uring|epoll] [MODULE ...]

Runs each module of ``test.test_asyncio`` named in :data:`MODULES` in a
child process of its own (bounded by a timeout), with the loop swapped:

- test classes that build their loop themselves (``create_event_loop`` /
  ``new_loop`` returning a selector loop) are run once, as a subclass that
  returns a parallio loop; their selector twins (select, poll, epoll) test
  asyncio's selectors, not this loop, and are left out;
- everything else gets parallio loops from asyncio itself: the default
  policy is parallio's for the whole run, so ``asyncio.new_event_loop()``,
  ``asyncio.Runner`` and ``IsolatedAsyncioTestCase`` make them.

The tests skipped for this loop and the classes left out, each with its
reason, are in ``skips.py``; a class that is neither run nor listed there
fails the module. ``test_conformance.py`` runs the same children under
pytest (``scripts/test``, ``.ci/run``). Prints one line per module and a total; exits 1 when a test
failed or a module did not finish in time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: module -> the classes to run (None: all of the module's test classes).
#: A class in the list that builds its own loop is run with a parallio loop.
MODULES: dict[str, list[str] | None] = {
    "test_events": ["EPollEventLoopTests", "AbstractEventLoopTests", "HandleTests", "TimerTests",
                    "PolicyTests", "TestAbstractServer", "TestServer", "TestCGetEventLoop",
                    "TestPyGetEventLoop"],
    "test_sock_lowlevel": ["EPollEventLoopTests"],
    "test_streams": None,
    "test_server": ["SelectorStartServerTests", "TestServer2", "UnixServerCleanupTests"],
    "test_sendfile": ["EPollEventLoopTests"],
    "test_sslproto": ["SslProtoHandshakeTests", "SelectorStartTLSTests"],
    "test_ssl": None,
    "test_subprocess": ["SubprocessThreadedWatcherTests", "SubprocessPidfdWatcherTests"],
    "test_taskgroups": None,
    "test_timeouts": None,
    "test_tasks": None,
    "test_locks": None,
    "test_queues": None,
}
#: Seconds one module may take before its child is killed.
MODULE_TIMEOUT = 300


def _with_parallio_loop(cls: type, io: str) -> type:
    import parallio.loop

    def create_event_loop(self: object) -> object:
        return parallio.loop.new_event_loop(io)

    namespace: dict[str, object] = {"__module__": cls.__module__,
                                    "__qualname__": cls.__qualname__}
    if hasattr(cls, "create_event_loop"):
        namespace["create_event_loop"] = create_event_loop
    if hasattr(cls, "new_loop"):
        namespace["new_loop"] = create_event_loop
    return type(cls.__name__, (cls,), namespace)


def _install_policy(io: str) -> None:
    import asyncio

    import parallio.loop

    class Policy(parallio.loop.EventLoopPolicy):
        def _loop_factory(self) -> object:  # type: ignore[override]
            return parallio.loop.new_event_loop(io)

    # Test modules reset the policy to None when they end: the default
    # policy itself is made parallio's, so every reset comes back to it.
    asyncio.DefaultEventLoopPolicy = Policy  # type: ignore[misc]
    asyncio.events.DefaultEventLoopPolicy = Policy  # type: ignore[attr-defined]
    asyncio.set_event_loop_policy(None)


def run_module(name: str, io: str) -> dict[str, Any]:
    """Run one module here; returns its counts and the ids of what failed."""
    from skips import LEFT_OUT, SKIPS  # type: ignore[import-not-found]

    _install_policy(io)
    import parallio.loop.events

    created = [0]
    original_init = parallio.loop.events.EventLoop.__init__

    def counting_init(self: object, *args: object, **kwargs: object) -> None:
        created[0] += 1
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]

    parallio.loop.events.EventLoop.__init__ = counting_init  # type: ignore[method-assign]
    module = importlib.import_module(f"test.test_asyncio.{name}")
    wanted = MODULES[name]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    unaccounted = []
    for attribute in dir(module):
        cls = getattr(module, attribute)
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        if cls.__module__ != module.__name__:
            continue
        if wanted is not None and attribute not in wanted:
            if (f"{name}.{attribute}" not in LEFT_OUT
                    and loader.getTestCaseNames(cls)):
                unaccounted.append(f"{name}.{attribute}")
            continue
        if wanted is not None:
            cls = _with_parallio_loop(cls, io)
        for method in loader.getTestCaseNames(cls):
            reason = SKIPS.get(f"{name}.{attribute}.{method}") or SKIPS.get(f"{name}.{attribute}")
            if reason:
                setattr(cls, method, unittest.skip(reason)(getattr(cls, method)))
        suite.addTests(loader.loadTestsFromTestCase(cls))
    stream = open(os.devnull, "w") if not os.environ.get("CONFORMANCE_VERBOSE") else sys.stderr
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    problems = [(str(test), text) for test, text in result.failures + result.errors]
    problems += [(test_class, "neither run nor listed in skips.LEFT_OUT")
                 for test_class in unaccounted]
    return {
        "run": result.testsRun,
        "skipped": len(result.skipped),
        "failed": len(result.failures) + len(result.errors),
        "expected_failures": len(result.expectedFailures),
        "problems": problems,
        "loops": created[0],
    }


def run_in_child(name: str, io: str, cwd: str) -> dict[str, Any] | str:
    """Run module ``name`` in a child process of its own, in ``cwd``;
    returns its counts, or what went wrong when it did not finish."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    try:
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--io", io, "--child", name],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=MODULE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"did not finish within {MODULE_TIMEOUT} s"
    lines = child.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])  # type: ignore[no-any-return]
    except (IndexError, ValueError):
        return f"crashed (exit {child.returncode})\n{child.stderr[-3000:]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--show", action="store_true", help="print the failures' tracebacks")
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_module(args.child, args.io)))
        return 0
    totals = {"passed": 0, "skipped": 0, "failed": 0}
    status = 0
    started = time.monotonic()
    # The tests leave files in their working directory: a scratch one.
    scratch = tempfile.mkdtemp(prefix="parallio-conformance-")
    for name in args.modules:
        begun = time.monotonic()
        counts = run_in_child(name, args.io, scratch)
        if isinstance(counts, str):
            print(f"{name}: {counts}", flush=True)
            status = 1
            continue
        passed = counts["run"] - counts["skipped"] - counts["failed"]
        totals["passed"] += passed
        totals["skipped"] += counts["skipped"]
        totals["failed"] += counts["failed"]
        print(f"{name}: {passed} passed, {counts['skipped']} skipped, {counts['failed']} failed "
              f"on {counts['loops']} parallio loops ({time.monotonic() - begun:.0f} s)", flush=True)
        if not counts["loops"]:
            print(f"  {name} made no parallio loop: the swap did not take", flush=True)
            status = 1
        for test, text in counts["problems"]:
            print(f"  FAILED {test}" + (f"\n{text}" if args.show else ""), flush=True)
        if counts["problems"]:
            status = 1
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"asyncio conformance ({sys.version.split()[0]}, io={args.io}): {totals['passed']} "
          f"passed, {totals['skipped']} skipped, {totals['failed']} failed in "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
