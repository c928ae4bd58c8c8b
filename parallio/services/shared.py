"""Shared data and isolation: ``share``/``shared``, ``protect``/``protected``,
``parallio.dict()`` and ``parallio.list()``.

Read-only data (:func:`share` before :func:`parallio.run`, :func:`shared` in
any worker):

- Buffers -- ``bytes``, ``bytearray``, ``memoryview``, ``mmap``,
  ``array.array`` -- are copied once into a sealed memfd, and every worker of
  every host reads that one copy: processes map it, and the threads and
  interpreters hosts share one mapping of it in the process. Workers get a
  :class:`SharedBuffer`.
- Other objects are shared as they are in the threads host. In the
  interpreters and processes hosts they are pickled once, into a memfd, and
  each worker unpickles its own copy the first time it asks for it: that
  costs the unpickling time and the object's memory once per worker (large
  buffers inside it that pickle out of band, such as NumPy arrays, stay in
  the memfd, zero-copy).

Workers get these read-only, in every host: changing one (``d[k] = v``,
``lst.append(x)``, ``obj.attr = v``, ``buf[0] = 1``) raises
:class:`AssignmentError`, which says what to use instead. (Two writes cannot
be caught: through a ``memoryview`` of a buffer, which raises ``TypeError``,
and by a method of your own class that changes its instance.)

Mutable shared state is deliberate: :func:`protect`, :func:`dict` and
:func:`list` make objects owned by the main thread. In the threads host,
workers use them directly, each operation under the object's lock; in the
other hosts, a worker's operation is a main-thread call
(:func:`~parallio.call_from_main_thread_and_wait`). Every single operation
is atomic; for a read-modify-write use :meth:`Protected.atomic`.
"""

from __future__ import annotations

import builtins
import collections.abc
import copy
import ctypes
import datetime
import decimal
import fcntl
import fractions
import mmap
import os
import pickle
import sys
import threading
import types
import weakref
from typing import Any, Callable, Iterator

from .. import _context
from ..worker import MAIN_ALIAS, current_worker
from ._hub import (MainHub, WorkerHub, current_hub, on_main_setup, on_worker_setup,
                   ref_of, resolve, worker_hub)
from .mainthread import call_from_main_thread_and_wait

__all__ = [
    "share", "shared", "unshare", "protect", "protected", "dict", "list", "AssignmentError",
    "ProtectionError", "SharedBuffer", "Protected",
]


class AssignmentError(Exception):
    """A worker tried to change read-only shared data."""


class ProtectionError(Exception):
    """A protected object was misused: created where workers cannot reach
    it, or reached after it was gone."""


def _deny(what: str) -> None:
    raise AssignmentError(
        f"{what}: data shared with workers is read-only there, in every host, so that no "
        "change is silently lost. Keep per-request state in local variables; for state "
        "that workers change, use parallio.dict(), parallio.list() or parallio.protect(); "
        "to change main-thread data, use parallio.call_from_main_thread().")


# -- read-only views ------------------------------------------------------------------

class SharedBuffer:
    """Read-only bytes shared by every worker without a copy.

    Indexing and slicing go through :attr:`view`: an item is a number, a
    slice is a read-only ``memoryview`` (no copy). ``bytes(buf)`` copies.
    On Python 3.12+ ``memoryview(buf)`` and libraries taking buffers (NumPy,
    ``struct``, ``re``, ``hashlib``) accept it directly; on 3.11 pass
    ``buf.view``.
    """

    __slots__ = ("_view", "_name", "__weakref__")

    def __init__(self, view: memoryview, name: str = "") -> None:
        self._view = view if view.readonly else view.toreadonly()
        self._name = name

    @property
    def view(self) -> memoryview:
        """A read-only ``memoryview`` of the data (no copy)."""
        return self._view

    @property
    def nbytes(self) -> int:
        return self._view.nbytes

    @property
    def format(self) -> str:
        return self._view.format

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._view.shape or ())

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self._view)

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, key: Any) -> Any:
        return self._view[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._view)

    def __bytes__(self) -> bytes:
        return self._view.tobytes()

    def tobytes(self) -> bytes:
        return self._view.tobytes()

    def tolist(self) -> builtins.list:
        return self._view.tolist()

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, SharedBuffer):
            other = other._view
        try:
            return self._view == memoryview(other)
        except TypeError:
            return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __setitem__(self, key: Any, value: Any) -> None:
        _deny(f"shared buffer {self._name!r} cannot be changed")

    def __delitem__(self, key: Any) -> None:
        _deny(f"shared buffer {self._name!r} cannot be changed")

    def __repr__(self) -> str:
        return f"<parallio.SharedBuffer {self._name!r}: {self._view.nbytes} bytes, read-only>"

    def __reduce__(self) -> tuple:
        return (bytes, (self._view.tobytes(),))


_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type, types.FunctionType,
          types.BuiltinFunctionType, types.ModuleType, datetime.date, datetime.time,
          datetime.timedelta, decimal.Decimal, fractions.Fraction, SharedBuffer)


def readonly(value: Any) -> Any:
    """``value`` as a worker may see shared data: itself if it cannot change,
    else a view whose changes raise :class:`AssignmentError`."""
    if isinstance(value, _ATOMS) or isinstance(value, (_ReadOnly, _ProtectedBase)):
        return value
    if isinstance(value, builtins.dict):
        return ReadOnlyDict(value)
    if isinstance(value, builtins.list):
        return ReadOnlyList(value)
    if isinstance(value, (set, frozenset)):
        return value if isinstance(value, frozenset) else ReadOnlySet(value)
    if isinstance(value, tuple):
        wrapped = [readonly(item) for item in value]
        if all(new is old for new, old in zip(wrapped, value)):
            return value
        make = getattr(value, "_make", None)  # a namedtuple keeps its type
        return make(wrapped) if make is not None else tuple(wrapped)
    if isinstance(value, (bytearray, memoryview, mmap.mmap)):
        return SharedBuffer(memoryview(value))
    if hasattr(value, "setflags") and hasattr(value, "view"):  # a NumPy array
        try:
            view = value.view()
            view.setflags(write=False)
            return view
        except Exception:
            pass
    try:
        return SharedBuffer(memoryview(value))  # anything else with the buffer protocol
    except TypeError:
        return ReadOnlyObject(value)


class _ReadOnly:
    __slots__ = ("_target",)
    _target: Any

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def copy(self) -> Any:
        """A private, changeable deep copy."""
        return copy.deepcopy(self._target)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, _ReadOnly):
            other = other._target
        return self._target == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"readonly({self._target!r})"

    def __reduce__(self) -> tuple:
        # Sent to another interpreter, it is plain data again: the receiver
        # decides whether its copy is read-only.
        return (_plain, (self._target,))


def _plain(value: Any) -> Any:
    return value


def _mutator(name: str, kind: str) -> Callable[..., Any]:
    def deny(self: Any, *args: Any, **kwds: Any) -> Any:
        _deny(f"{kind}.{name}() would change shared data")
    deny.__name__ = name
    return deny


class ReadOnlyDict(_ReadOnly, collections.abc.Mapping):
    """A shared ``dict`` as a worker sees it."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        return readonly(self._target[key])

    def __iter__(self) -> Iterator[Any]:
        return iter(self._target)

    def __len__(self) -> int:
        return len(self._target)

    def __contains__(self, key: Any) -> bool:
        return key in self._target

    def get(self, key: Any, default: Any = None) -> Any:
        return readonly(self._target.get(key, default))



class ReadOnlyList(_ReadOnly, collections.abc.Sequence):
    """A shared ``list`` as a worker sees it."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        return readonly(self._target[index])

    def __iter__(self) -> Iterator[Any]:
        return builtins.map(readonly, self._target)

    def __len__(self) -> int:
        return len(self._target)

    def __contains__(self, item: Any) -> bool:
        return item in self._target



class ReadOnlySet(_ReadOnly, collections.abc.Set):
    """A shared ``set`` as a worker sees it."""

    __slots__ = ()

    @classmethod
    def _from_iterable(cls, iterable: Any) -> frozenset:
        return frozenset(iterable)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._target)

    def __len__(self) -> int:
        return len(self._target)

    def __contains__(self, item: Any) -> bool:
        return item in self._target



class ReadOnlyObject(_ReadOnly):
    """Any other shared object as a worker sees it: attributes and items
    read through, assignments refused. Its methods are the object's own."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        return value if callable(value) else readonly(value)

    def __setattr__(self, name: str, value: Any) -> None:
        _deny(f"setting attribute {name!r} would change shared data")

    def __delattr__(self, name: str) -> None:
        _deny(f"deleting attribute {name!r} would change shared data")

    def __getitem__(self, key: Any) -> Any:
        return readonly(self._target[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        _deny("item assignment would change shared data")

    def __delitem__(self, key: Any) -> None:
        _deny("item deletion would change shared data")

    def __len__(self) -> int:
        return len(self._target)

    def __iter__(self) -> Iterator[Any]:
        return builtins.map(readonly, self._target)

    def __contains__(self, item: Any) -> bool:
        return item in self._target


for _cls, _kind, _names in (
        (ReadOnlyDict, "dict", ("__setitem__", "__delitem__", "__ior__", "pop", "popitem",
                                "clear", "update", "setdefault")),
        (ReadOnlyList, "list", ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append",
                                "extend", "insert", "pop", "remove", "clear", "sort",
                                "reverse")),
        (ReadOnlySet, "set", ("__ior__", "__iand__", "__isub__", "__ixor__", "add", "discard",
                              "remove", "pop", "clear", "update", "intersection_update",
                              "difference_update", "symmetric_difference_update"))):
    for _name in _names:
        setattr(_cls, _name, _mutator(_name, _kind))
del _cls, _kind, _names, _name


# -- share / shared --------------------------------------------------------------------

#: Exact types shared as bytes; other buffer-like objects (NumPy arrays) keep
#: their type through pickling, their data still zero-copy (out of band).
_BUFFER_TYPES = (bytes, bytearray, memoryview, mmap.mmap)


def _is_buffer(obj: Any) -> bool:
    return isinstance(obj, _BUFFER_TYPES) or type(obj).__module__ == "array"


class _Share:
    """One shared object: the memfd other interpreters read and, for an
    object that is not a buffer, the original (the main thread's, and the
    threads host's)."""

    def __init__(self, name: str, obj: Any) -> None:
        self.name = name
        buffers: builtins.list[memoryview] = []
        # A buffer is not kept: the memfd is its one copy, which the main
        # thread reads too, so dropping the original frees its memory.
        self.obj = None if _is_buffer(obj) else obj
        if _is_buffer(obj):
            view = memoryview(obj)
            if not view.c_contiguous:
                view = memoryview(view.tobytes())
            self.layout: tuple = ("buffer", view.format, tuple(view.shape or ()))
            parts = [view.cast("B") if view.ndim else view.cast("B", [view.nbytes])]
        else:
            try:
                data = pickle.dumps(obj, protocol=5,
                                    buffer_callback=lambda b: buffers.append(b.raw()))
            except Exception as exc:
                raise TypeError(f"share({name!r}, ...): a {type(obj).__name__} cannot be "
                                f"copied to other interpreters: {exc}") from exc
            parts = [memoryview(data), *buffers]
            self.layout = ("pickle",)
        # Out-of-band buffers start on cache lines, as NumPy likes them.
        self.regions: builtins.list[tuple[int, int]] = []
        offset = 0
        for part in parts:
            self.regions.append((offset, part.nbytes))
            offset += -(-part.nbytes // 64) * 64
        self.size = offset
        self.fd = os.memfd_create(f"parallio-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, self.size)
            for (start, _length), part in zip(self.regions, parts):
                _pwrite_all(self.fd, part, start)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(self.fd)
            raise
        self._mapping: mmap.mmap | None = None
        self._anchor: Any = None
        self._local: Any = None
        self._address_given = False
        # Threads-host workers open a share at once: one mapping, one view.
        self._open_lock = threading.RLock()

    def in_process_address(self) -> int:
        """The address of one private mapping of the memfd, made once and
        read by every worker of this process: one mapping, so the data
        counts once in this process's resident memory."""
        if not self.size:
            return 0
        with self._open_lock:
            if self._mapping is None:
                # Private and writable only to learn its address through
                # ctypes; nothing writes to it, and a write could not reach
                # the memfd.
                self._mapping = mmap.mmap(self.fd, self.size, flags=mmap.MAP_PRIVATE,
                                          prot=mmap.PROT_READ | mmap.PROT_WRITE)
                self._anchor = ctypes.c_char.from_buffer(self._mapping)
            return ctypes.addressof(self._anchor)

    def local_value(self) -> Any:
        """What workers of the threads host get (the same object for all),
        and the main thread for a buffer."""
        with self._open_lock:
            if self._local is None:
                if self.layout[0] == "buffer":
                    self.in_process_address()
                    raw = (memoryview(self._mapping) if self._mapping is not None
                           else memoryview(b""))
                    self._local = _buffer_from(raw, self.layout, self.regions, self.name)
                else:
                    self._local = readonly(self.obj)
            return self._local

    def descriptor(self, host: str) -> tuple:
        if host == "threads":
            return ("local", self)
        if host == "interpreters":
            self._address_given = True
            return ("address", self.in_process_address(), self.size, self.layout, self.regions)
        return ("fd", self.fd, self.size, self.layout, self.regions)

    def close(self) -> None:
        """Forget the share. The mapping goes when its last view does; but
        interpreters, which outlive their workers in a pool, read it by
        address, unseen by Python: once they had it, it stays mapped."""
        if self._address_given:
            _retired.append((self._mapping, self._anchor))
        self._local = self._anchor = self._mapping = None
        os.close(self.fd)


_retired: builtins.list[tuple] = []


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _buffer_from(raw: memoryview, layout: tuple, regions: builtins.list, name: str) -> Any:
    start, length = regions[0]
    view = raw[start:start + length].toreadonly()
    _kind, fmt, shape = layout
    if fmt != "B" or builtins.len(shape) > 1:
        try:
            view = view.cast(fmt, builtins.list(shape)) if shape else view.cast(fmt)
        except (TypeError, ValueError):
            pass  # a format memoryview cannot cast to: bytes it stays
    return SharedBuffer(view, name)


def _open_descriptor(descriptor: tuple, name: str) -> Any:
    """A worker's read-only view of a share, from its descriptor."""
    kind = descriptor[0]
    if kind == "local":
        return descriptor[1].local_value()
    _kind, where, size, layout, regions = descriptor
    if size == 0:
        raw = memoryview(b"")
    elif kind == "address":
        raw = memoryview((ctypes.c_ubyte * size).from_address(where)).cast("B")
    else:
        raw = memoryview(mmap.mmap(where, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))
    if layout[0] == "buffer":
        return _buffer_from(raw, layout, regions, name)
    (start, length), *rest = regions
    value = pickle.loads(raw[start:start + length],
                         buffers=[raw[offset:offset + size].toreadonly()
                                  for offset, size in rest])
    return readonly(value)


_shares: builtins.dict[str, _Share] = {}
_shares_lock = threading.Lock()


def share(name: str, obj: Any) -> None:
    """Make ``obj`` readable by every worker as ``shared(name)``.

    Call it on the main thread before :func:`parallio.run` (or between
    runs). What workers read is ``obj`` as it was at this call: buffers and,
    outside the threads host, other objects are copied now, once. A buffer's
    copy is the only one parallio keeps: drop yours to keep one copy in
    memory. Sharing a name again replaces it.

    Raises:
      RuntimeError: workers are running, or this is not the main thread.
      TypeError: ``obj`` can neither be read as a buffer nor be pickled.
    """
    if _context.in_worker_import():
        return  # a worker re-reading the main script: it reads the main's share
    _check_main("share")
    if not isinstance(name, str):
        raise TypeError(f"a share's name must be a str, not {type(name).__name__}")
    _check_stopped("share")
    entry = _Share(name, obj)
    with _shares_lock:
        old = _shares.pop(name, None)
        _shares[name] = entry
    if old is not None:
        old.close()


def unshare(name: str) -> None:
    """Forget a share and free its memory (main thread, no workers running).

    Raises:
      KeyError: nothing is shared under ``name``.
    """
    _check_main("unshare")
    _check_stopped("unshare")
    with _shares_lock:
        entry = _shares.pop(name)
    entry.close()


def shared(name: str) -> Any:
    """The object shared as ``name``: read-only in workers (see the module
    documentation). On the main thread: the original object, or for a
    buffer the same :class:`SharedBuffer` workers read.

    Raises:
      KeyError: nothing is shared under ``name``.
    """
    hub = worker_hub()
    if hub is None:
        with _shares_lock:
            entry = _shares.get(name)
        if entry is None:
            raise KeyError(f"nothing is shared as {name!r}: call parallio.share({name!r}, obj) "
                           "before run()")
        return entry.local_value() if entry.obj is None else entry.obj
    cache = hub.service(_SharedCache)
    try:
        return cache[name]
    except KeyError:
        pass
    descriptors = hub.extras.get("shares", {})
    if name not in descriptors:
        raise KeyError(f"nothing is shared as {name!r} (shared: {sorted(descriptors) or 'none'}):"
                       f" call parallio.share({name!r}, obj) on the main thread before run()")
    value = cache[name] = _open_descriptor(descriptors[name], name)
    return value


def _check_main(name: str) -> None:
    if current_worker() is not None:
        raise RuntimeError(f"parallio.{name}() belongs to the main thread")


def _check_stopped(name: str) -> None:
    if current_hub() is not None:
        raise RuntimeError(f"parallio.{name}() must come before run() (or after it returns): "
                           "running workers have read the shares already")


def _setup_main_shares(hub: MainHub) -> None:
    with _shares_lock:
        entries = builtins.list(_shares.values())
    hub.extras["shares"] = {entry.name: entry.descriptor(hub.host) for entry in entries}
    if not hub.runtime.host.in_process:
        # Other processes inherit the memfds, at the same numbers.
        hub.pass_fds.extend(entry.fd for entry in entries)


class _SharedCache(builtins.dict):
    """One worker's objects found by name with :func:`shared`, by name."""


def _setup_worker_shares(hub: WorkerHub) -> None:
    hub.install(_SharedCache())


# -- protected objects -----------------------------------------------------------------

#: Protected objects of this interpreter by key, for workers' operations and
#: for unpickling. Weak: an object the main thread dropped is gone.
_protected: "weakref.WeakValueDictionary[tuple, Protected]" = weakref.WeakValueDictionary()
#: Containers the main thread made because a worker's module asked for them
#: (a module the main thread never imported): nothing else holds them.
_made_for_workers: builtins.dict[tuple, "Protected"] = {}
_protected_lock = threading.RLock()
_anonymous_ids = iter(range(1, sys.maxsize))


def _module_key(depth: int) -> tuple | None:
    """A key naming the call site, when the caller is a module's top level:
    the same in the main thread and in every worker that imports the module,
    which is how their objects find each other."""
    frame = sys._getframe(depth + 1)
    if frame.f_code.co_name != "<module>":
        return None
    module = frame.f_globals.get("__name__", "?")
    if module == MAIN_ALIAS:  # a worker's copy of the main script
        module = "__main__"
    elif module == "__main__":
        spec = frame.f_globals.get("__spec__")
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # python -m pkg.mod: workers import it as pkg.mod
    return ("module", module, frame.f_lasti)


def _in_worker() -> bool:
    """True in a worker, including while it loads the main script (before
    its worker object exists)."""
    return current_worker() is not None or _context.in_worker_import()


class _ProtectedBase:
    """What :class:`Protected` and its remote stand-in share: the operators,
    each one operation on the object."""

    __slots__ = ()

    def _op(self, op: str, *args: Any, **kwds: Any) -> Any:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        return self._op("__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._op("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._op("__delitem__", key)

    def __contains__(self, item: Any) -> bool:
        return self._op("__contains__", item)

    def __len__(self) -> int:
        return self._op("__len__")

    def __iter__(self) -> Iterator[Any]:
        """Iterates over a snapshot, taken in one operation."""
        return iter(self._op("__snapshot__"))

    def __bool__(self) -> bool:
        return self._op("__truth__")

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, _ProtectedBase):
            other = other._op("__snapshot_value__")
        return self._op("__eq__", other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"protected({self._op('__repr__')})"

    def atomic(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(obj, *args)`` as one operation on the object: nothing else
        touches it meanwhile. Read-modify-write this way::

            def bump(counts, key):
                counts[key] = counts.get(key, 0) + 1

            hits = parallio.dict()
            hits.atomic(bump, "/index")   # in any worker

        Outside the threads host ``func`` runs on the main thread, so it
        must be importable (top level of a module or of the main script).
        """
        return self._op("__atomic__", ref_of(func, "atomic function"), args)


class Protected(_ProtectedBase):
    """An object owned by the main thread, safe to change from workers.

    Made by :func:`protect`, :func:`dict` and :func:`list`. Each operation --
    an item or attribute read or write, a method call, ``len``, ``in``,
    iteration (over a snapshot) -- holds the object's lock. In a worker,
    what an operation returns is read-only (:class:`AssignmentError` on
    change): change the object through the object, not through what it
    returned.
    """

    __slots__ = ("_target", "_lock", "_key", "_kind", "__weakref__")

    def __init__(self, target: Any, key: tuple, kind: str) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_kind", kind)

    def _raw(self, op: str, args: tuple = (), kwds: builtins.dict | None = None) -> Any:
        """Run one operation under the lock; returns what it returned, as
        is (the main thread's side of a remote operation)."""
        target = self._target
        with self._lock:
            if op == "__snapshot__":
                return builtins.list(target)
            if op == "__snapshot_value__":
                return copy.copy(target)
            if op == "__truth__":
                return bool(target)
            if op == "__repr__":
                return repr(target)
            if op == "__atomic__":
                func_ref, func_args = args
                return resolve(func_ref.path)(target, *func_args)
            if op == "__getattr__":
                value = getattr(target, args[0])
                return ("method",) if callable(value) else ("value", value)
            if op == "__setattr__":
                return setattr(target, *args)
            if op == "__delattr__":
                return delattr(target, *args)
            result = getattr(target, op)(*args, **(kwds or {}))
            if isinstance(result, (collections.abc.MappingView, collections.abc.Iterator)):
                # keys(), items(), iter(): read now, under the lock, not later
                # while others change the object.
                return builtins.list(result)  # type: ignore[arg-type]
            return result

    def _op(self, op: str, *args: Any, **kwds: Any) -> Any:
        result = self._raw(op, args, kwds)
        return result if current_worker() is None else readonly(result)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        kind, *value = self._raw("__getattr__", (name,))
        if kind == "value":
            return value[0] if current_worker() is None else readonly(value[0])
        return lambda *args, **kwds: self._op(name, *args, **kwds)

    def __setattr__(self, name: str, value: Any) -> None:
        self._raw("__setattr__", (name, value))

    def __delattr__(self, name: str) -> None:
        self._raw("__delattr__", (name,))

    def __reduce__(self) -> tuple:
        with _protected_lock:
            _protected.setdefault(self._key, self)
        return (_lookup, (self._key, self._kind))


class RemoteProtected(_ProtectedBase):
    """A protected object of the main thread as a worker of the interpreters
    or processes host reaches it: each operation is a main-thread call."""

    __slots__ = ("_key", "_kind", "_methods")

    def __init__(self, key: tuple, kind: str) -> None:
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_methods", set())

    def _op(self, op: str, *args: Any, **kwds: Any) -> Any:
        return readonly(call_from_main_thread_and_wait(
            _protected_op, (self._key, self._kind, op, args, kwds)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        container = {"dict": builtins.dict, "list": builtins.list}.get(self._kind)
        if name not in self._methods and not hasattr(container, name):
            kind, *value = call_from_main_thread_and_wait(
                _protected_op, (self._key, self._kind, "__getattr__", (name,), {}))
            if kind == "value":
                return readonly(value[0])
            self._methods.add(name)
        return lambda *args, **kwds: self._op(name, *args, **kwds)

    def __setattr__(self, name: str, value: Any) -> None:
        self._op("__setattr__", name, value)

    def __delattr__(self, name: str) -> None:
        self._op("__delattr__", name)

    def __reduce__(self) -> tuple:
        return (_lookup, (self._key, self._kind))


def _registered(key: tuple) -> "Protected | None":
    # Not `a or b`: an empty protected container is false.
    found = _protected.get(key)
    return found if found is not None else _made_for_workers.get(key)


def _lookup(key: tuple, kind: str) -> _ProtectedBase:
    """Unpickling a protected object: the object itself in the interpreter
    that owns it (the main one, which threads-host workers share), a remote
    stand-in elsewhere."""
    worker = current_worker()
    if not _context.in_worker_import() and (worker is None or worker.spec.host == "threads"):
        with _protected_lock:
            found = _registered(key)
        if found is not None:
            return found
        if worker is None:
            return _find(key, kind)
    return RemoteProtected(key, kind)


def _find(key: tuple, kind: str) -> Protected:
    with _protected_lock:
        found = _registered(key)
        if found is not None:
            return found
        if key[0] == "module" and kind in ("dict", "list"):
            # The main thread never imported the module that made it.
            made = Protected(builtins.dict() if kind == "dict" else builtins.list(), key, kind)
            _made_for_workers[key] = _protected[key] = made
            return made
    if key[0] == "module":
        raise ProtectionError(
            f"parallio.protect() at the top level of module {key[1]!r} ran in a worker but "
            "never on the main thread, which owns protected objects: import that module on "
            "the main thread before run()")
    raise ProtectionError("this protected object no longer exists on the main thread")


def _protected_op(key: tuple, kind: str, op: str, args: tuple, kwds: builtins.dict) -> Any:
    """A worker's operation on a protected object, on the main thread."""
    return _find(key, kind)._raw(op, args, kwds)


def _make(target: Any, kind: str, depth: int) -> _ProtectedBase:
    key = _module_key(depth + 1)
    if _in_worker():
        if key is None:
            raise ProtectionError(
                f"parallio.{'protect' if kind == 'object' else kind}() in a worker: protected "
                "objects belong to the main thread. Create them there (or at the top level "
                "of a module), then share() them or pass them to workers")
        worker = current_worker()
        # The threads host shares the main interpreter: its registry is ours.
        if worker is None or worker.spec.host != "threads":
            return RemoteProtected(key, kind)
    with _protected_lock:
        if key is None:
            key = ("main", next(_anonymous_ids))
        elif key in _made_for_workers:
            # A worker asked for it before the main thread imported its module.
            return _made_for_workers.pop(key)
        elif key in _protected:
            raise ProtectionError(
                f"a protected object was created twice at the same place of module {key[1]!r}"
                " (a loop, or a reload): workers could not tell them apart")
        made = Protected(target, key, kind)
        _protected[key] = made
        return made


def protect(obj: Any) -> Protected:
    """``obj``, made safe to change from every worker; see :class:`Protected`.

    Call it on the main thread, or at the top level of a module (where every
    worker that imports the module finds the main thread's object). Give
    workers the result (through :func:`share`, an argument, a module
    global) and change ``obj`` only through it.

    Raises:
      ProtectionError: called in a worker, outside a module's top level.
    """
    if isinstance(obj, _ProtectedBase):
        return obj  # type: ignore[return-value]
    return _make(obj, "object", 1)  # type: ignore[return-value]


def protected(obj: Any) -> bool:
    """True if ``obj`` is a protected object (from :func:`protect`,
    :func:`dict` or :func:`list`)."""
    return isinstance(obj, _ProtectedBase)


def dict(*args: Any, **kwds: Any) -> Protected:
    """A protected ``dict`` (made like ``dict(...)``), owned by the main
    thread; see :func:`protect`."""
    return _make(builtins.dict(*args, **kwds), "dict", 1)  # type: ignore[return-value]


def list(iterable: Any = ()) -> Protected:
    """A protected ``list`` (made like ``list(...)``), owned by the main
    thread; see :func:`protect`."""
    return _make(builtins.list(iterable), "list", 1)  # type: ignore[return-value]


on_main_setup(_setup_main_shares)
on_worker_setup(_setup_worker_shares)
