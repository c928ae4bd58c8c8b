"""CPython's asyncio suite against parallio's loop, one module per test
(``run.py`` says how the loop is swapped in, ``skips.py`` what is left out
and why). Every module runs on the engine ``auto`` picks; the I/O modules
run on epoll too where ``auto`` is io_uring."""

from __future__ import annotations

import importlib.util

import pytest

from parallio.engine import uring_unavailable_reason

from .run import MODULE_TIMEOUT, MODULES, run_in_child

#: The modules whose tests do I/O through the loop (the rest are about
#: tasks, futures and synchronisation, the same on either engine).
IO_MODULES = ["test_events", "test_sock_lowlevel", "test_streams", "test_server",
              "test_sendfile", "test_sslproto"]

CASES = [pytest.param(name, "auto", id=f"{name}-auto") for name in MODULES]
if uring_unavailable_reason() is None:
    CASES += [pytest.param(name, "epoll", id=f"{name}-epoll", marks=pytest.mark.long)
              for name in IO_MODULES]


@pytest.mark.timeout(MODULE_TIMEOUT + 30)
@pytest.mark.parametrize(("module", "io"), CASES)
def test_cpython_asyncio_module_passes_on_parallios_loop(module, io, tmp_path):
    if importlib.util.find_spec("test.test_asyncio") is None:
        pytest.skip("this Python was built without its test package (Lib/test)")
    counts = run_in_child(module, io, str(tmp_path))
    assert not isinstance(counts, str), f"{module}: {counts}"
    assert counts["loops"], f"{module} made no parallio loop: the swap did not take"
    problems = "\n".join(f"FAILED {test}\n{text}" for test, text in counts["problems"])
    assert not counts["problems"], problems
    assert counts["run"] > counts["skipped"]
