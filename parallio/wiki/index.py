"""The wiki's index: every headword, case-folded and sorted, with where its
entries lie in the text. Sans-I/O and standard library only: build_index()
makes the bytes, :class:`Index` searches them where they lie (a shared
memory mapping), with no per-process list or dict of the keys.

Keys are :func:`fold`-ed (``str.casefold`` then NFC), so search is
Unicode-aware and case-insensitive; each key keeps one display headword, the
first one the source gave it. Keys sort bytewise as UTF-8, which is code
point order, and a UTF-8 prefix of a key is a prefix of its characters, so
prefix search is a binary search on bytes.

Layout: a 64-byte header, then these sections, each starting on 8 bytes,
all numbers in the byte order of the machine that built it (the header says
which; an index from the other order is refused, not misread)::

    key_prefixes  u64 x keys         key i's first 8 bytes (zero-padded) as a
                                     big-endian number: they sort as the keys
                                     do, so the C bisect module narrows a
                                     search before any bytes are compared
    key_starts    u32 x (keys + 1)   where key i starts in the key text
    head_starts   u32 x (keys + 1)   where headword i starts in the head text
    first_entry   u32 x (keys + 1)   key i's entries are first_entry[i] ..
                                     first_entry[i + 1] - 1
    entry_offsets u64 x entries      where each entry starts in the text
    entry_lengths u32 x entries      and how many bytes it has
    key text      the folded keys, UTF-8, back to back, in order
    head text     the display headwords, UTF-8
    title         the dictionary's name, UTF-8
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from bisect import bisect_left, bisect_right
import unicodedata
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Union

__all__ = ["Index", "IndexFormatError", "Match", "Record", "SearchResult", "build_index",
           "fold", "parse_limit", "search_document", "MAGIC", "VERSION", "MAX_LIMIT",
           "DEFAULT_LIMIT"]

MAGIC = b"PXWIKI\r\n"
VERSION = 1
_BYTE_ORDER_MARK = 0xFEFF
# magic, version, byte-order mark, title bytes, keys, entries, key-text
# bytes, head-text bytes, text bytes, build id.
_HEADER = struct.Struct("=8sHHI6Q")
_U32_LIMIT = 1 << 32

#: The most results one search returns, and how many without a limit.
MAX_LIMIT = 100
DEFAULT_LIMIT = 10

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]


class IndexFormatError(ValueError):
    """Bytes that are not an index this code can read."""


def fold(text: str) -> str:
    """The form keys are compared in: case-folded (``ß`` -> ``ss``, ``Σ`` and
    ``ς`` -> ``σ``), then NFC, so composed and decomposed accents match."""
    return unicodedata.normalize("NFC", text.casefold())


@dataclass(frozen=True)
class Record:
    """One entry of the source: its headword and where its text lies."""

    headword: str
    offset: int
    length: int


class Match(NamedTuple):
    """One key: its position in the index, display headword and entries as
    ``(offset, length)`` pairs in text order."""

    number: int
    headword: str
    entries: tuple[tuple[int, int], ...]


class SearchResult(NamedTuple):
    matches: list[Match]
    #: More keys have the prefix than were returned.
    more: bool


def _prefix_number(key: bytes) -> int:
    return int.from_bytes(key[:8].ljust(8, b"\0"), "big")


def _aligned(size: int) -> int:
    return -(-size // 8) * 8


def _layout(keys: int, entries: int, key_text: int, head_text: int,
            title: int) -> tuple[list[tuple[int, int]], int]:
    """The (offset, size) of each section, in order, and the total size."""
    sizes = [8 * keys] + [4 * (keys + 1)] * 3 + [8 * entries, 4 * entries, key_text,
                                                 head_text, title]
    sections = []
    offset = _HEADER.size
    for size in sizes:
        sections.append((offset, size))
        offset = _aligned(offset + size)
    return sections, sections[-1][0] + sections[-1][1]


def build_index(records: Iterable[Record], text_size: int, title: str = "") -> bytes:
    """The index of ``records``, entries of a text of ``text_size`` bytes.

    Records whose headwords fold to the same key become one key with
    several entries, in text order (a repeated range is kept once); its
    display headword is the first of them given.

    Raises:
      ValueError: an entry lies outside the text, or the index would pass
        a limit of the format (2**32 keys, entries, bytes of keys or
        headwords, or bytes in one entry).
    """
    groups: dict[bytes, tuple[str, set[tuple[int, int]]]] = {}
    for record in records:
        if record.offset < 0 or record.length < 0 or record.offset + record.length > text_size:
            raise ValueError(f"the entry of {record.headword!r} ({record.length} bytes at "
                             f"{record.offset}) lies outside the {text_size}-byte text")
        if record.length >= _U32_LIMIT:
            raise ValueError(f"the entry of {record.headword!r} has {record.length} bytes: "
                             "the format takes under 4 GiB per entry")
        key = fold(record.headword).encode()
        group = groups.get(key)
        if group is None:
            groups[key] = (record.headword, {(record.offset, record.length)})
        else:
            group[1].add((record.offset, record.length))
    keys = sorted(groups)
    key_starts, head_starts, first_entry = [0], [0], [0]
    offsets: list[int] = []
    lengths: list[int] = []
    heads = []
    for key in keys:
        headword, spans = groups[key]
        head = headword.encode()
        heads.append(head)
        key_starts.append(key_starts[-1] + len(key))
        head_starts.append(head_starts[-1] + len(head))
        for offset, length in sorted(spans):
            offsets.append(offset)
            lengths.append(length)
        first_entry.append(len(offsets))
    for what, value in (("keys", len(keys) + 1), ("entries", len(offsets)),
                        ("bytes of keys", key_starts[-1]),
                        ("bytes of headwords", head_starts[-1])):
        if value >= _U32_LIMIT:
            raise ValueError(f"too many {what} for the index format ({value}; under 2**32)")
    title_bytes = title.encode()
    sections = [
        struct.pack(f"={len(keys)}Q", *map(_prefix_number, keys)),
        struct.pack(f"={len(key_starts)}I", *key_starts),
        struct.pack(f"={len(head_starts)}I", *head_starts),
        struct.pack(f"={len(first_entry)}I", *first_entry),
        struct.pack(f"={len(offsets)}Q", *offsets),
        struct.pack(f"={len(lengths)}I", *lengths),
        b"".join(keys),
        b"".join(heads),
        title_bytes,
    ]
    placed, total = _layout(len(keys), len(offsets), key_starts[-1], head_starts[-1],
                            len(title_bytes))
    out = bytearray(total)
    digest = hashlib.blake2b(digest_size=8)
    for (offset, _size), data in zip(placed, sections):
        out[offset:offset + len(data)] = data
        digest.update(data)
    build_id = int.from_bytes(digest.digest(), "little")
    _HEADER.pack_into(out, 0, MAGIC, VERSION, _BYTE_ORDER_MARK, len(title_bytes), len(keys),
                      len(offsets), key_starts[-1], head_starts[-1], text_size, build_id)
    return bytes(out)


class Index:
    """An index read in place from ``buffer`` (bytes, or a memoryview of a
    mapping): nothing is copied but the keys a search compares and the
    headwords it returns. Safe to share between threads.

    Raises:
      IndexFormatError: ``buffer`` is not a whole index of this version
        and byte order.
    """

    def __init__(self, buffer: Buffer) -> None:
        view = memoryview(buffer).cast("B")
        if len(view) < _HEADER.size:
            raise IndexFormatError(f"{len(view)} bytes: too short for an index")
        (magic, version, order, title_size, keys, entries, key_text, head_text, text_size,
         build_id) = _HEADER.unpack_from(view)
        if magic != MAGIC:
            raise IndexFormatError("not a parallio wiki index (wrong magic number)")
        if order != _BYTE_ORDER_MARK:
            raise IndexFormatError("the index was built on a machine of the other byte order: "
                                   "rebuild it here")
        if version != VERSION:
            raise IndexFormatError(f"index format version {version}; this parallio reads "
                                   f"version {VERSION}: rebuild it")
        sections, total = _layout(keys, entries, key_text, head_text, title_size)
        if len(view) != total:
            raise IndexFormatError(f"the index has {len(view)} bytes where its header says "
                                   f"{total}: truncated or damaged, rebuild it")
        parts = [view[offset:offset + size] for offset, size in sections]
        self._key_prefixes = parts[0].cast("Q")
        self._key_starts = parts[1].cast("I")
        self._head_starts = parts[2].cast("I")
        self._first_entry = parts[3].cast("I")
        self._offsets = parts[4].cast("Q")
        self._lengths = parts[5].cast("I")
        self._keys = parts[6]
        self._heads = parts[7]
        if (self._key_starts[keys] != key_text or self._head_starts[keys] != head_text
                or self._first_entry[keys] != entries):
            raise IndexFormatError("the index's sections disagree with its header: rebuild it")
        #: Keys (distinct folded headwords).
        self.keys = keys
        #: Entries, over all keys.
        self.entries = entries
        #: The size of the text the entries point into.
        self.text_size = text_size
        #: A hash of the index's content: the same source gives the same id.
        self.build_id = build_id
        self.title = parts[8].tobytes().decode()
        self.nbytes = total

    def __len__(self) -> int:
        return self.keys

    def key(self, number: int) -> bytes:
        """Key ``number``, folded, as UTF-8."""
        starts = self._key_starts
        return self._keys[starts[number]:starts[number + 1]].tobytes()

    def headword(self, number: int) -> str:
        starts = self._head_starts
        return str(self._heads[starts[number]:starts[number + 1]], "utf-8")

    def match(self, number: int) -> Match:
        """Key ``number``'s headword and entries."""
        if not 0 <= number < self.keys:
            raise IndexError(f"key {number} of {self.keys}")
        return self._match(number)

    def _match(self, number: int) -> Match:
        first, end = self._first_entry[number], self._first_entry[number + 1]
        if end - first == 1:  # most keys
            entries: tuple = ((self._offsets[first], self._lengths[first]),)
        else:
            entries = tuple(zip(self._offsets[first:end].tolist(),
                                self._lengths[first:end].tolist()))
        starts = self._head_starts
        return Match(number, str(self._heads[starts[number]:starts[number + 1]], "utf-8"),
                     entries)

    def _lower_bound(self, needle: bytes) -> int:
        """The first key not below ``needle``.

        A key whose prefix number is below (above) the needle's is below
        (above) the needle, so bisecting the prefix numbers leaves only the
        keys that share the needle's first 8 bytes to compare as bytes. Each
        such probe copies at most len(needle) bytes: a key cut to that length
        orders against the needle as the whole key does, equality meaning
        "not below"."""
        prefix = _prefix_number(needle)
        low = bisect_left(self._key_prefixes, prefix)
        high = bisect_right(self._key_prefixes, prefix, low)
        starts, text = self._key_starts, self._keys
        size = len(needle)
        while low < high:
            middle = (low + high) >> 1
            start = starts[middle]
            end = min(starts[middle + 1], start + size)
            if text[start:end].tobytes() < needle:
                low = middle + 1
            else:
                high = middle
        return low

    def _has_prefix(self, number: int, needle: bytes) -> bool:
        start = self._key_starts[number]
        end = start + len(needle)
        return end <= self._key_starts[number + 1] and self._keys[start:end] == needle

    def search(self, prefix: str, limit: int) -> SearchResult:
        """The first ``limit`` keys (in order) that start with ``prefix``
        once folded; the empty prefix starts every key."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        needle = fold(prefix).encode()
        first = self._lower_bound(needle)
        if len(needle) <= 8 and not needle.endswith(b"\0"):
            # The keys with this prefix are those below the next prefix
            # number. (A needle ending in NUL could also take in a key one
            # shorter, which pads with the same zero.)
            shift = 64 - 8 * len(needle)
            bound = ((_prefix_number(needle) >> shift) + 1) << shift
            end = bisect_left(self._key_prefixes, bound, first)
        else:
            end = first
            while end < self.keys and end - first <= limit and self._has_prefix(end, needle):
                end += 1
        shown = range(first, min(end, first + limit))
        return SearchResult([self._match(number) for number in shown], end - first > limit)

    def lookup(self, word: str) -> Optional[Match]:
        """The key ``word`` folds to, or None."""
        needle = fold(word).encode()
        number = self._lower_bound(needle)
        if number < self.keys and self.key(number) == needle:
            return self._match(number)
        return None


def parse_limit(text: str) -> int:
    """The ``limit`` of a search request: a whole number 1..MAX_LIMIT.

    Raises:
      ValueError: anything else; the message is for the client.
    """
    if text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_LIMIT:
        return int(text)
    raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")


def search_document(index: Index, prefix: str, limit: int) -> dict:
    """What ``/search?q=PREFIX&limit=N`` answers, as JSON: the query, the
    matches (headword, entries as [offset, length]) and whether more keys
    have the prefix."""
    found = index.search(prefix, limit)
    return {"q": prefix, "more": found.more,
            "results": [{"headword": match.headword, "entries": match.entries}
                        for match in found.matches]}
