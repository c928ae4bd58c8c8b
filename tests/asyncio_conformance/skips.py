"""What of CPython's asyncio suite does not run against parallio's loop,
each with the reason.

``SKIPS``: single tests (``module.Class.method``) or whole classes
(``module.Class``) of the classes the runner runs; none today.

``LEFT_OUT``: the test classes of a module in ``run.MODULES`` that the
runner does not run. Every class of such a module is either run or listed
here (the runner fails on one that is neither, so a new CPython's new class
is looked at, not silently dropped).
"""

_SELECTOR_TWIN = ("the same mixin tests on asyncio's own selector loop with another "
                  "selector; the class that runs them on this loop is run")
_PROACTOR = "Windows' IOCP proactor loop (skipped by CPython itself on Linux)"
_WATCHER = ("asyncio's child watchers other than the thread and pidfd ones, driving the "
            "same SubprocessMixin tests: the watcher, not the loop, is what differs")

SKIPS: dict[str, str] = {
}

LEFT_OUT: dict[str, str] = {
    "test_events.SelectEventLoopTests": _SELECTOR_TWIN,
    "test_events.PollEventLoopTests": _SELECTOR_TWIN,
    "test_sock_lowlevel.SelectEventLoopTests": _SELECTOR_TWIN,
    "test_sock_lowlevel.PollEventLoopTests": _SELECTOR_TWIN,
    "test_sendfile.SelectEventLoopTests": _SELECTOR_TWIN,
    "test_sendfile.PollEventLoopTests": _SELECTOR_TWIN,
    "test_server.ProactorStartServerTests": _PROACTOR,
    "test_sslproto.ProactorStartTLSTests": _PROACTOR,
    "test_subprocess.GenericWatcherTests": ("mocks of the child watcher API (3.11), "
                                            "no loop of any kind"),
    "test_subprocess.SubprocessTransportTests": ("asyncio's BaseSubprocessTransport on a "
                                                 "mock loop, no event loop runs"),
    "test_subprocess.SubprocessFastWatcherTests": _WATCHER,
    "test_subprocess.SubprocessSafeWatcherTests": _WATCHER,
    "test_subprocess.SubprocessMultiLoopWatcherTests": _WATCHER,
    "test_subprocess.MultiLoopChildWatcherTests": _WATCHER,
}
