"""Reading dictd databases: the ``.index`` file and the ``.dict[.dz]`` text.

An index line is ``headword TAB offset TAB length``, optionally followed by
``TAB original-headword`` (``dictfmt --index-keep-orig`` puts the headword
as written there, and a normalised one first). Offset and length are
numbers written in base 64 with the digits
``A-Z a-z 0-9 + /`` (A is 0, / is 63), most significant digit first: a
positional number, not RFC 4648 base64 of bytes. ``AAB`` and ``B`` are 1.

Headwords starting ``00-database-`` (or ``00database``) are the database's
own information (its name, URL, ...), which dictd leaves out of searches;
:func:`parse_index` does too, and ``00-database-short`` gives the title.

A ``.dict.dz`` is dictzip: a gzip file whose extra field maps chunks for
random access. Read from start to end it is plain gzip, which is all a
one-time unpack needs.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

from .index import Record

__all__ = ["ALPHABET", "DictdFormatError", "DictdIndex", "decode_number", "encode_number",
           "parse_index", "database_title", "unpack"]

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGITS = {character.encode()[0]: value for value, character in enumerate(ALPHABET)}
_INFO_PREFIXES = ("00-database-", "00database")
_SHORT_NAMES = ("00-database-short", "00databaseshort")
#: Bytes of a digit string past which the number is over 2**64: a damaged line.
_MAX_DIGITS = 11

#: Called with (bytes done, bytes in all) while a long step runs.
ProgressCallback = Callable[[int, int], None]


class DictdFormatError(ValueError):
    """A dictd index that cannot be read; the message names the line."""


def decode_number(digits: bytes) -> int:
    """The number written as ``digits`` in dictd's base 64.

    Raises:
      ValueError: empty, too long, or a character outside the alphabet.
    """
    if not digits or len(digits) > _MAX_DIGITS:
        raise ValueError(f"{digits!r} is not a dictd number (1 to {_MAX_DIGITS} digits)")
    value = 0
    for byte in digits:
        digit = _DIGITS.get(byte)
        if digit is None:
            raise ValueError(f"{chr(byte)!r} is not a dictd base-64 digit")
        value = value * 64 + digit
    return value


def encode_number(value: int) -> str:
    """``value`` in dictd's base 64, as dictfmt writes it (no leading A)."""
    if value < 0:
        raise ValueError(f"dictd numbers are not negative: {value}")
    digits = []
    while True:
        value, digit = divmod(value, 64)
        digits.append(ALPHABET[digit])
        if not value:
            return "".join(reversed(digits))


@dataclass
class DictdIndex:
    """What a dictd ``.index`` holds: the entries to search, in file order,
    the database's own information entries, and how headwords were decoded."""

    records: list[Record]
    info: list[Record]
    encoding: str


def parse_index(data: bytes) -> DictdIndex:
    """Read a whole ``.index`` file. Headwords are UTF-8 if the whole file
    decodes so, else Latin-1 (dictd's older 8-bit databases).

    Raises:
      DictdFormatError: a line without offset and length, or with a number
        that is not one.
    """
    try:
        text = data.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        encoding = "latin-1"
    records: list[Record] = []
    info: list[Record] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise DictdFormatError(f"line {number}: expected headword, offset and length "
                                   f"separated by tabs, got {line[:80]!r}")
        try:
            offset = decode_number(fields[1].encode())
            length = decode_number(fields[2].encode())
        except ValueError as exc:
            raise DictdFormatError(f"line {number}: {exc}") from None
        headword = fields[3] if len(fields) > 3 and fields[3] else fields[0]
        record = Record(headword, offset, length)
        (info if fields[0].startswith(_INFO_PREFIXES) else records).append(record)
    return DictdIndex(records, info, encoding)


def database_title(index: DictdIndex, text: BinaryIO) -> str:
    """The database's short name (its ``00-database-short`` entry, without
    the headword line dictfmt starts it with), or ``""``."""
    for record in index.info:
        if record.headword in _SHORT_NAMES:
            text.seek(record.offset)
            lines = text.read(record.length).decode(index.encoding, "replace").splitlines()
            if lines and lines[0].strip() == record.headword:
                del lines[0]
            return " ".join(line.strip() for line in lines if line.strip())
    return ""


_CHUNK = 1 << 20


def unpack(source: str | os.PathLike, target: BinaryIO,
           progress: Optional[ProgressCallback] = None) -> int:
    """Write the text of ``source`` (``.dict``, or dictzip/gzip ``.dz``) to
    ``target``; returns its size. ``progress`` hears how much of the source
    (compressed) was read."""
    total = os.path.getsize(source)
    written = 0
    with open(source, "rb") as raw:
        if os.fspath(source).endswith(".dz") or raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            reader: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        else:
            raw.seek(0)
            reader = raw
        with reader:
            while True:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                target.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(raw.tell(), total)
    if progress is not None:
        progress(total, total)
    return written
