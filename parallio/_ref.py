"""Naming classes and functions by import path, so every worker can find them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectRef:
    """A class or function named by import path, plus the object itself.

    Workers in the threads host use ``obj`` directly; other hosts import
    ``path`` (``module:qualname``). ``module`` ``__main__`` means the user's
    main script, which workers load under another name (as multiprocessing
    does), so its ``if __name__ == "__main__"`` block does not run again.

    With ``by_value``, ``obj`` itself is pickled to the workers (an object
    made from command-line options, say) and ``path`` only names the module
    they must be able to import (the interpreters host checks that it can).
    Objects other than classes and functions make their own reference with
    a ``__parallio_ref__()`` method.
    """

    path: str
    obj: Any = None
    by_value: bool = False

    def __getstate__(self) -> dict:
        return {"path": self.path, "obj": self.obj if self.by_value else None,
                "by_value": self.by_value}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "path", state["path"])
        object.__setattr__(self, "obj", state["obj"])
        object.__setattr__(self, "by_value", state.get("by_value", False))

    @classmethod
    def of(cls, target: Any) -> "ObjectRef":
        if isinstance(target, str):
            if ":" not in target:
                raise ValueError(f"{target!r}: name a class or function as 'module:Name'")
            return cls(target)
        if not isinstance(target, type) and hasattr(target, "__parallio_ref__"):
            return target.__parallio_ref__()
        module = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", None)
        if module is None or qualname is None or "<locals>" in qualname:
            raise ValueError(
                f"{target!r} cannot be named by import path: define it at module level")
        return cls(f"{module}:{qualname}", target)

    def resolve(self) -> Any:
        if self.obj is not None:
            return self.obj
        module_name, _, qualname = self.path.partition(":")
        # import_module even when the module is in sys.modules: it waits for
        # a module another thread is still initializing (workers of the
        # threads host resolve the same path at once), where sys.modules
        # would hand out the half-made module.
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj

