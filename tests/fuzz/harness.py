"""The harness registry, the input decoder harnesses share, and seed loading.

A harness is a function of one ``bytes`` input that returns normally when
every invariant held and raises when one did not (an exception the code
under test may not raise, or an ``AssertionError`` of the harness's own).
The same function serves atheris (coverage-guided fuzzing) and plain replay
of files, so nothing here imports atheris.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

__all__ = ["Harness", "FuzzInput", "harness", "harnesses", "HARNESS_MODULES", "CORPUS", "DICTIONARIES"]

CORPUS = Path(__file__).parent / "corpus"
DICTIONARIES = Path(__file__).parent / "dictionaries"

#: Modules whose import registers harnesses. A new harness module is one more line.
HARNESS_MODULES = ("tests.fuzz.http_harnesses",)

Target = Callable[[bytes], None]


@dataclass(frozen=True)
class Harness:
    name: str
    target: Target
    #: Inputs longer than this are not generated (libFuzzer's -max_len).
    max_len: int
    #: A libFuzzer dictionary in ``dictionaries/``, or None.
    dictionary: str | None = None
    #: Seeds kept elsewhere in the repository (e.g. the parser's refusal
    #: corpus), as (name, input) pairs, on top of ``corpus/<name>/``.
    extra_seeds: Callable[[], Iterable[tuple[str, bytes]]] = field(default=lambda: ())

    @property
    def seed_dir(self) -> Path:
        return CORPUS / self.name

    def seeds(self) -> Iterator[tuple[str, bytes]]:
        """Every seed input, committed files first, as (name, input)."""
        if self.seed_dir.is_dir():
            for path in sorted(self.seed_dir.iterdir()):
                if path.is_file():
                    yield path.name, path.read_bytes()
        yield from self.extra_seeds()

    @property
    def dictionary_path(self) -> Path | None:
        return DICTIONARIES / self.dictionary if self.dictionary else None


_REGISTRY: dict[str, Harness] = {}


def harness(name: str, *, max_len: int, dictionary: str | None = None,
            extra_seeds: Callable[[], Iterable[tuple[str, bytes]]] | None = None
            ) -> Callable[[Target], Target]:
    """Register the decorated function as harness ``name``."""
    def register(target: Target) -> Target:
        if name in _REGISTRY:
            raise ValueError(f"fuzz harness {name!r} is registered twice")
        _REGISTRY[name] = Harness(name, target, max_len, dictionary,
                                  extra_seeds if extra_seeds is not None else (lambda: ()))
        return target
    return register


def harnesses() -> dict[str, Harness]:
    """Every registered harness by name, in registration order."""
    for module in HARNESS_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


class FuzzInput:
    """Structured values taken from the front of a fuzz input; the payload
    is what is left. Plays the part of atheris's FuzzedDataProvider, which
    replay without atheris cannot use. An exhausted input reads as zeros, so
    every byte string is a valid input."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def byte(self) -> int:
        value = self._data[self._pos] if self._pos < len(self._data) else 0
        self._pos += 1
        return value

    def integer(self, size: int) -> int:
        """An unsigned big-endian integer of ``size`` bytes."""
        raw = self._data[self._pos:self._pos + size]
        self._pos += size
        return int.from_bytes(raw.ljust(size, b"\0"), "big")

    def take(self, size: int) -> bytes:
        raw = self._data[self._pos:self._pos + size]
        self._pos += size
        return raw

    def rest(self) -> bytes:
        raw = self._data[self._pos:]
        self._pos = len(self._data)
        return raw
