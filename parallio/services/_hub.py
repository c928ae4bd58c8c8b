"""The plumbing PyParallel's services share, in every host.

Two halves, joined by the per-worker control socket:

- :class:`MainHub`, one per :class:`~parallio.runtime.Runtime`, lives on the
  main thread's side. Its handlers run on the supervisor thread.
- :class:`WorkerHub`, one per worker, lives in the worker (thread,
  subinterpreter or process) and is driven by the worker's own loop.

Each service module (work, timers, mainthread, shared, introspect) adds its
part to both with :func:`on_main_setup` and :func:`on_worker_setup`.

What crosses between them is pickled: functions and classes by import path
(:func:`ref_of`), exceptions with their traceback as text
(:func:`exc_payload`). A worker waiting for a main-thread call reads its reply
from a pipe of its own (not the control socket, which its engine reads), so
the wait never steals or reorders control messages; the runtime makes that
pipe with each worker, so a successor never reads its predecessor's replies.
"""

from __future__ import annotations

import collections
import importlib
import itertools
import logging
import os
import pickle
import select
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable, TypeVar, cast

from .. import _control
from .._ref import ObjectRef
from .._spec import MainModule
from ..runtime import Runtime, _main_module, _runtime_hooks
from ..worker import MAIN_ALIAS, Worker, _worker_start_hooks, current_worker, load_main_module

log = logging.getLogger("parallio")

#: The key of the services' part of ``WorkerSpec.extras``.
KEY = "services"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another worker or on the
    main thread, set as the ``__cause__`` of the exception re-raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """Stands for an exception that could not be pickled across: its type
    name and message are kept, and its traceback is the ``__cause__``."""


# -- naming functions by import path ------------------------------------------

def _main_spec_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None and spec.name != "__main__" else None


def ref_of(func: Any, role: str = "function") -> ObjectRef:
    """Name ``func`` by import path so that any worker, and the main thread,
    can find it; raises :class:`TypeError` for what cannot be found that way
    (lambdas, nested functions, bound methods)."""
    if not callable(func):
        raise TypeError(f"the {role} must be callable, not {type(func).__name__}")
    try:
        ref = ObjectRef.of(func)
    except ValueError as exc:
        raise TypeError(f"the {role} {func!r} {_NAMING_RULE}") from exc
    module, _, qualname = ref.path.partition(":")
    worker = current_worker()
    if module == MAIN_ALIAS or (module != "__main__" and module == _main_name_here(worker)):
        ref = ObjectRef(f"__main__:{qualname}", func)
    try:
        found = resolve(ref.path)
    except Exception:
        found = None
    if found is not func and getattr(found, "__wrapped__", None) is not func:
        raise TypeError(f"the {role} {func!r} {_NAMING_RULE}")
    return ref


_NAMING_RULE = ("cannot be named by import path, as every host needs: define it with def "
                "at the top level of a module (lambdas, nested functions and bound methods "
                "cannot be sent to another worker)")


def _main_name_here(worker: Worker | None) -> str | None:
    """The module name the user's main module has in this interpreter, when
    it was loaded by name (``python -m pkg.mod``)."""
    if worker is None:
        return _main_spec_name()
    main = worker.spec.main_module or worker.spec.extras.get(KEY, {}).get("main_module")
    return main.name if main is not None else None


def resolve(path: str) -> Any:
    """The object an import path ``module:qualname`` names here. ``__main__``
    is the user's main module on the main thread and, loaded on first use,
    in workers of every host."""
    module_name, _, qualname = path.partition(":")
    worker = current_worker()
    if module_name == "__main__" or module_name == _main_name_here(worker):
        if worker is not None:
            _ensure_main_loaded(worker)
        module: Any = sys.modules["__main__"]
    else:
        module = sys.modules.get(module_name)
        if module is None:
            module = importlib.import_module(module_name)
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _ensure_main_loaded(worker: Worker) -> None:
    """Workers load the main script only when a protocol needs it; a work
    item or a timer defined there may need it later."""
    if worker.spec.host == "threads" or worker.spec.main_module is not None:
        return
    state = worker.existing_extension(WorkerHub)
    if state is None or state.main_loaded:
        return
    state.main_loaded = True
    main: MainModule | None = worker.spec.extras.get(KEY, {}).get("main_module")
    if main is None:
        raise ImportError("this function lives in the __main__ module of an interactive "
                          "session: define it in a module or script so workers can import it")
    load_main_module(main)


# -- results and exceptions across interpreters ---------------------------------

def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def exc_payload(exc: BaseException) -> tuple:
    """An exception as picklable data, traceback included as text."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    data: bytes | None
    try:
        data = dumps(exc)
        pickle.loads(data)
    except Exception:
        data = None
    return (data, f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), text)


def exc_from_payload(payload: tuple) -> BaseException:
    """The exception :func:`exc_payload` described, with the remote
    traceback as its ``__cause__``."""
    data, type_name, message, text = payload
    exc: BaseException | None = None
    if data is not None:
        try:
            exc = pickle.loads(data)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(f"{type_name}: {message}")
    exc.__cause__ = RemoteTraceback(text)
    return exc


def result_payload(value: Any) -> tuple[bool, Any]:
    """``(True, pickled value)``, or ``(False, exception payload)`` when the
    value cannot be pickled."""
    try:
        return True, dumps(value)
    except Exception as exc:
        try:
            raise TypeError(f"the result {type(value).__name__} cannot be sent to another "
                            f"interpreter: {exc}") from exc
        except TypeError as error:
            return False, exc_payload(error)


# -- the main side ----------------------------------------------------------------

_main_setups: list[Callable[["MainHub"], object]] = []
_worker_setups: list[Callable[["WorkerHub"], object]] = []


def on_main_setup(setup: Callable[["MainHub"], object]) -> None:
    """Call ``setup`` with each new runtime's :class:`MainHub`."""
    _main_setups.append(setup)


def on_worker_setup(setup: Callable[["WorkerHub"], object]) -> None:
    """Call ``setup`` with each new worker's :class:`WorkerHub`."""
    _worker_setups.append(setup)


_Service = TypeVar("_Service")


class _Services:
    """Each service's own state on one hub, found by its class: a service
    installs an instance when the hub is made and looks it up later."""

    def __init__(self) -> None:
        self._services: dict[type, object] = {}

    def install(self, service: _Service) -> _Service:
        self._services[type(service)] = service
        return service

    def service(self, kind: type[_Service]) -> _Service:
        """The instance of ``kind`` installed on this hub."""
        try:
            return cast(_Service, self._services[kind])
        except KeyError:
            raise LookupError(f"no {kind.__qualname__} is installed on this hub") from None


#: Live main hubs, oldest first. Guarded by _hubs_lock: user threads read it.
_hubs: list["MainHub"] = []
_hubs_lock = threading.Lock()
#: Errors nobody handled (work items without errback, fire-and-forget
#: main-thread calls), kept for parallio.run() to re-raise.
_unhandled: list[BaseException] = []


class MainHub(_Services):
    """The services' state for one runtime, on the main thread's side."""

    def __init__(self, runtime: Runtime) -> None:
        _Services.__init__(self)
        self.runtime = runtime
        #: Set by parallio.map for its own short-lived runtimes: those do not
        #: take work queued for the next run().
        self.private = bool(runtime.extras.get("private"))
        #: True from the first worker's start until the runtime closes.
        self.started = False
        self.live = True
        #: Worker positions whose worker serves now.
        self.ready: set[int] = set()
        self._ready_callbacks: list[Callable[[int], None]] = []
        self._gone_callbacks: list[Callable[[int], object]] = []
        self._close_callbacks: list[Callable[[], None]] = []
        self.extras: dict[str, Any] = runtime.extras.setdefault(KEY, {})
        self.pass_fds: list[int] = runtime.extras.setdefault("pass_fds", [])
        try:
            self.extras["main_module"] = _main_module([ObjectRef("__main__:_")])
        except RuntimeError:  # an interactive session: nothing to load
            self.extras["main_module"] = None
        runtime.add_message_handler("worker_ready", self._on_ready)
        runtime.add_message_handler("worker_gone", self._on_gone)
        runtime.close_callbacks.append(self._on_close)
        for setup in _main_setups:
            setup(self)

    @property
    def host(self) -> str:
        return self.runtime.host.name

    def on_ready(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(seq_id)`` when a worker serves, again after a restart."""
        self._ready_callbacks.append(callback)

    def on_gone(self, callback: Callable[[int], object]) -> None:
        """Call ``callback(seq_id)`` when a worker stopped or died."""
        self._gone_callbacks.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the runtime's workers are all gone."""
        self._close_callbacks.append(callback)

    def _on_ready(self, seq_id: int) -> None:
        self.started = True
        self.ready.add(seq_id)
        for callback in self._ready_callbacks:
            callback(seq_id)

    def _on_gone(self, seq_id: int) -> None:
        self.ready.discard(seq_id)
        for callback in self._gone_callbacks:
            callback(seq_id)

    def _on_close(self) -> None:
        self.live = False
        with _hubs_lock:
            if self in _hubs:
                _hubs.remove(self)
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception:
                log.exception("parallio: a service failed to close")

    def send(self, seq_id: int, message: tuple) -> bool:
        """Send a control message to worker ``seq_id``; False if it is gone."""
        return self.runtime.send(seq_id, message)

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the supervisor thread (from any thread)."""
        self.runtime.call_soon(call)

    def reply(self, seq_id: int, message: tuple) -> None:
        """Send a main-thread call's reply to worker ``seq_id``, which waits
        for it on its reply pipe. Never blocks the supervisor: a worker that
        no longer reads (it gave up waiting) has it queued, whole."""
        self.runtime.reply(seq_id, message)

    def unhandled(self, exc: BaseException, what: str) -> None:
        """An error nobody handles: log it now, re-raise it from run()."""
        unhandled(exc, what)


def unhandled(exc: BaseException, what: str) -> None:
    """Log an error nobody handles and keep it for :func:`take_unhandled`."""
    log.error("parallio: %s", what, exc_info=(type(exc), exc, exc.__traceback__))
    with _hubs_lock:
        _unhandled.append(exc)


def take_unhandled() -> list[BaseException]:
    """The unhandled errors since the last call, oldest first."""
    with _hubs_lock:
        errors = _unhandled[:]
        _unhandled.clear()
    return errors


#: Each returns the import paths of what a service holds for the next run()
#: (queued work items, started timers): empty when it holds nothing.
_pending_sources: list[Callable[[], list[ObjectRef]]] = []


def on_pending(source: Callable[[], list[ObjectRef]]) -> None:
    """Register what :func:`pending_refs` asks."""
    _pending_sources.append(source)


def pending_refs() -> list[ObjectRef] | None:
    """What the services hold for the next run(): the import paths it
    needs (for the host probe), or None when they hold nothing."""
    refs: list[ObjectRef] | None = None
    for source in _pending_sources:
        found = source()
        if found:
            refs = (refs or []) + found
    return refs


def raise_unhandled() -> None:
    """Re-raise the first error nobody handled since the last call (the
    others were logged, and are counted in a note)."""
    errors = take_unhandled()
    if not errors:
        return
    first = errors[0]
    if len(errors) > 1:
        first.add_note(f"parallio: {len(errors) - 1} more unhandled error(s) were logged")
    raise first


_by_runtime: "weakref.WeakKeyDictionary[Runtime, MainHub]" = weakref.WeakKeyDictionary()


def _make_main_hub(runtime: Runtime) -> None:
    hub = MainHub(runtime)
    with _hubs_lock:
        _hubs.append(hub)
        _by_runtime[runtime] = hub


def hub_of(runtime: Runtime) -> MainHub:
    """The services' state of ``runtime``."""
    return _by_runtime[runtime]


def current_hub() -> MainHub | None:
    """The hub of the runtime that main-thread calls to services act on: the
    newest one whose workers started and still run (not a map's own), or
    None."""
    with _hubs_lock:
        for hub in reversed(_hubs):
            if hub.started and hub.live and not hub.private:
                return hub
    return None


_runtime_hooks.append(_make_main_hub)


# -- the worker side ----------------------------------------------------------------

class MainThreadGone(RuntimeError):
    """The main thread did not answer: it stopped, or died."""


class WorkerHub(_Services):
    """The services' state in one worker. Everything here runs on the
    worker's own thread, in its loop."""

    def __init__(self, worker: Worker) -> None:
        _Services.__init__(self)
        self.worker = worker
        self.extras: dict[str, Any] = worker.spec.extras.get(KEY, {})
        self.main_loaded = False
        self._reply_fd = worker.spec.reply_fd
        self._reply_reader = _control.MessageReader()
        # Replies carry the id of their call: a late reply to a call that
        # timed out is told from the one awaited.
        self._call_ids = itertools.count(1)
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._job_scheduled = False
        self._running_job = False
        worker.busy_checks.append(self.has_jobs)
        for setup in _worker_setups:
            setup(self)

    # -- jobs: work items, map chunks ---------------------------------------------
    def has_jobs(self) -> bool:
        return bool(self._jobs) or self._running_job

    def job_count(self) -> int:
        """Jobs queued, and the one running now."""
        return len(self._jobs) + self._running_job

    def enqueue(self, job: Callable[[], None]) -> None:
        """Run ``job`` in this worker after the current callback, one job per
        turn of the loop so connections are served in between."""
        self._jobs.append(job)
        if not self._job_scheduled:
            self._job_scheduled = True
            self.worker.call_later(0, self._run_job)
            self.worker.report_idle()

    def _run_job(self) -> None:
        self._job_scheduled = False
        if not self._jobs:
            return
        job = self._jobs.popleft()
        self._running_job = True
        try:
            job()
        finally:
            self._running_job = False
            if self._jobs:
                self._job_scheduled = True
                self.worker.call_later(0, self._run_job)
            else:
                self.worker.report_idle()

    def cancel_jobs(self, predicate: Callable[[Callable[[], None]], bool]) -> None:
        """Drop queued jobs for which ``predicate`` is true."""
        self._jobs = collections.deque(job for job in self._jobs if not predicate(job))

    # -- talking to the main thread -------------------------------------------------
    def send(self, message: tuple) -> None:
        self.worker.send_to_main(message)

    def call_main(self, payload: bytes, timeout: float) -> Any:
        """Run the pickled ``(ref, args, kwargs)`` on the main thread and wait
        for its result (re-raising its exception) at most ``timeout`` seconds.

        This blocks the worker's loop: nothing else runs in this worker
        meanwhile, as PyParallel's parallel contexts blocked.
        """
        if self._reply_fd is None:
            raise MainThreadGone("this worker has no reply pipe to the main thread")
        call_id = next(self._call_ids)
        self.send(("svc_call", call_id, payload))
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._reply_fd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the main thread did not answer within {timeout:g} s")
            if not poller.poll(remaining * 1000):
                continue
            data = os.read(self._reply_fd, 1 << 20)
            if not data:
                raise MainThreadGone("the main thread went away during a main-thread call")
            for reply_id, ok, value in self._reply_reader.feed(data):
                if reply_id != call_id:
                    continue  # the late reply of a call that timed out
                if ok:
                    return pickle.loads(value)
                raise exc_from_payload(value)


def worker_hub() -> WorkerHub | None:
    """This worker's hub, or None outside a worker."""
    worker = current_worker()
    if worker is None:
        return None
    return worker.existing_extension(WorkerHub)


def _make_worker_hub(worker: Worker) -> None:
    worker.extension(WorkerHub)


_worker_start_hooks.append(_make_worker_hub)
