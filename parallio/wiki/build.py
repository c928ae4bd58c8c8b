"""``python -m parallio wiki build``: a dictd database made into the wiki's
data directory, once.

The directory gets the unpacked text (:data:`TEXT_NAME`) and the index
(:data:`INDEX_NAME`, see :mod:`parallio.wiki.index`), each written under a
temporary name and renamed into place. The source is any dictd ``.index`` +
``.dict[.dz]`` pair; by default Debian's ``dict-gcide``, installed with
apt-get when it is missing and this process may.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO

from .dictd import DictdFormatError, database_title, parse_index, unpack
from .index import Index, build_index

__all__ = ["BuildError", "BuildSummary", "Progress", "build", "find_source",
           "DEFAULT_SOURCE", "DEBIAN_PACKAGE", "TEXT_NAME", "INDEX_NAME"]

#: The GNU Collaborative International Dictionary of English, as Debian installs it.
DEFAULT_SOURCE = "/usr/share/dictd/gcide"
DEBIAN_PACKAGE = "dict-gcide"
TEXT_NAME = "entries.txt"
INDEX_NAME = "headwords.index"

Say = Callable[[str], None]


class BuildError(Exception):
    """The data cannot be built; the message says what to do."""


class Progress:
    """How far a step is, on ``stream`` (stderr): on a terminal one line
    rewritten in place, elsewhere (a log) a line every tenth."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self._label = ""
        self._shown = -1
        self._last_draw = 0.0

    def say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, label: str) -> Callable[[int, int], None]:
        """A callback taking (done, total) for the step called ``label``."""
        self._label, self._shown = label, -1
        return self._update

    def _update(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if self.live:
            now = time.monotonic()
            if percent == self._shown or (percent < 100 and now - self._last_draw < 0.1):
                return
            self._last_draw = now
            end = "\n" if percent == 100 else ""
            self.stream.write(f"\r  {self._label}: {percent:3d}%{end}")
        else:
            percent -= percent % 10
            if percent == self._shown:
                return
            self.stream.write(f"  {self._label}: {percent}%\n")
        self._shown = percent
        self.stream.flush()


def _pair(base: str) -> Optional[tuple[str, str]]:
    index = base + ".index"
    for text in (base + ".dict.dz", base + ".dict"):
        if os.path.isfile(index) and os.path.isfile(text):
            return index, text
    return None


def _base_of(path: str) -> str:
    for suffix in (".index", ".dict.dz", ".dict"):
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


def find_source(source: Optional[str], install: bool, say: Say) -> tuple[str, str]:
    """The ``(index, text)`` paths of the dictd database ``source`` names:
    its ``.index`` or ``.dict[.dz]`` file, its base name, or a directory
    holding one database. None means :data:`DEFAULT_SOURCE`, installing
    :data:`DEBIAN_PACKAGE` first when it is missing and ``install`` is set.

    Raises:
      BuildError: no such database.
    """
    if source is None:
        found = _pair(DEFAULT_SOURCE)
        if found is None and install:
            from ..bench.tools import apt_install

            say(f"wiki: {DEFAULT_SOURCE}.index is missing")
            if apt_install(DEBIAN_PACKAGE, say):
                found = _pair(DEFAULT_SOURCE)
        if found is None:
            raise BuildError(f"no dictd database at {DEFAULT_SOURCE}.index: install Debian's "
                             f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) or pass "
                             "--source PATH to a dictd .index + .dict[.dz] pair")
        return found
    if os.path.isdir(source):
        bases = sorted(os.path.join(source, name[:-len(".index")])
                       for name in os.listdir(source) if name.endswith(".index"))
        pairs = [pair for pair in map(_pair, bases) if pair is not None]
        if len(pairs) != 1:
            names = ", ".join(os.path.basename(index) for index, _ in pairs) or "none"
            raise BuildError(f"--source {source}: a directory must hold exactly one dictd "
                             f".index + .dict[.dz] pair (found: {names}); name one")
        return pairs[0]
    found = _pair(_base_of(source))
    if found is None:
        raise BuildError(f"--source {source}: no dictd database there (wanted "
                         f"{_base_of(source)}.index and {_base_of(source)}.dict[.dz])")
    return found


@dataclass(frozen=True)
class BuildSummary:
    index_path: str
    text_path: str
    title: str
    keys: int
    entries: int
    index_bytes: int
    text_bytes: int
    seconds: float


def build(index_source: str, text_source: str, data_dir: str,
          progress: Optional[Progress] = None) -> BuildSummary:
    """Unpack ``text_source`` into ``data_dir`` and index it from
    ``index_source``.

    Raises:
      BuildError: the source is not a readable dictd database, or its index
        points outside its text.
    """
    progress = progress or Progress()
    started = time.monotonic()
    os.makedirs(data_dir, exist_ok=True)
    text_path = os.path.join(data_dir, TEXT_NAME)
    index_path = os.path.join(data_dir, INDEX_NAME)
    progress.say(f"wiki: building {data_dir} from {index_source} and {text_source}")
    try:
        with open(index_source, "rb") as file:
            parsed = parse_index(file.read())
    except DictdFormatError as exc:
        raise BuildError(f"{index_source}: {exc}") from None
    progress.say(f"  read {len(parsed.records):,} entries ({parsed.encoding} headwords)")
    with open(text_path + ".tmp", "w+b") as text:
        text_size = unpack(text_source, text, progress.step(
            f"unpacking {os.path.basename(text_source)}"))
        title = database_title(parsed, text)
    progress.say(f"  indexing {len(parsed.records):,} entries")
    try:
        data = build_index(parsed.records, text_size, title)
    except ValueError as exc:
        os.unlink(text_path + ".tmp")
        raise BuildError(f"{index_source}: {exc}; is {text_source} its text?") from None
    with open(index_path + ".tmp", "wb") as file:
        file.write(data)
    os.replace(text_path + ".tmp", text_path)
    os.replace(index_path + ".tmp", index_path)
    index = Index(data)
    summary = BuildSummary(index_path, text_path, title, index.keys, index.entries, len(data),
                           text_size, time.monotonic() - started)
    progress.say(f"wiki: {summary.keys:,} headwords, {summary.entries:,} entries; index "
                 f"{summary.index_bytes / 1e6:.1f} MB, text {summary.text_bytes / 1e6:.1f} MB "
                 f"({summary.seconds:.1f} s)" + (f": {title}" if title else ""))
    return summary
