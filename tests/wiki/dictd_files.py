"""Small dictd databases for the wiki tests, written the way dictfmt and
dictzip write them: an ``.index`` of base-64 numbers and a ``.dict.dz``
that is gzip with dictzip's random-access extra field and its chunks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from parallio.wiki.dictd import encode_number

#: The words of the sample dictionary: (headwords, text). Several
#: headwords may share one text (one range); one headword may have several
#: texts (homographs), in the order given.
SAMPLE: list[tuple[tuple[str, ...], str]] = [
    (("00-database-short",), "00-database-short\n   Sample Dictionary of Tests\n"),
    (("00-database-url",), "00-database-url\n   https://example.invalid/\n"),
    (("apple",), "Apple \\Ap\"ple\\, n.\n   The fleshy fruit of a rosaceous tree. See {Pear}.\n"),
    (("Apple",), "Apple \\Ap\"ple\\, v. i.\n   To grow like an apple.\n"),
    (("apricot",), "Apricot \\A\"pri*cot\\, n.\n   A fruit; see {Apple}.\n"),
    (("application",), "Application, n.\n   The act of applying.\n"),
    (("Bank", "bank"), "Bank \\Bank\\, n.\n   A mound, a pile, or a ridge of earth.\n"),
    (("Café",), "Café, n.\n   A coffee house; a restaurant.\n"),
    (("cafeteria",), "Cafeteria, n.\n   A restaurant where one serves oneself.\n"),
    (("naïve",), "Naïve, a.\n   Having natural, unaffected simplicity.\n"),
    (("Straße",), "Straße, n. (German)\n   A street.\n"),
    (("strass",), "Strass, n.\n   A flint glass used for paste jewels.\n"),
    (("\u00c9cole",), "École, n. (French)\n   A school.\n"),
    (("Ωmega",), "Ωmega, n.\n   The last letter, written as a word.\n"),
    (("日本",), "日本, n.\n   Japan.\n"),
    (("and/or",), "And/or, conj.\n   Either or both.\n"),
    (("zymurgy",), "Zymurgy, n.\n   The chemistry of fermentation. See {Brewing}.\n"),
]


def words_of(sample=SAMPLE) -> list[str]:
    return [headword for headwords, _ in sample for headword in headwords
            if not headword.startswith("00-")]


def dictzip(data: bytes, chunk_length: int = 1024) -> bytes:
    """``data`` as a dictzip file: gzip whose extra field ``RA`` lists the
    compressed size of every ``chunk_length`` bytes, each chunk ending in
    a full flush so it can be inflated on its own."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = []
    for start in range(0, len(data), chunk_length):
        piece = compressor.compress(data[start:start + chunk_length])
        last = start + chunk_length >= len(data)
        piece += compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)
        chunks.append(piece)
    if not chunks:
        chunks.append(compressor.flush(zlib.Z_FINISH))
    field = struct.pack("<HHH", 1, chunk_length, len(chunks)) + b"".join(
        struct.pack("<H", len(chunk)) for chunk in chunks)
    extra = b"RA" + struct.pack("<H", len(field)) + field
    header = (b"\x1f\x8b\x08\x04" + struct.pack("<I", 0) + b"\x02\x03"
              + struct.pack("<H", len(extra)) + extra)
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return header + b"".join(chunks) + trailer


def write_dictd(base: Path, sample=SAMPLE, *, compress: bool = True,
                keep_original: bool = False) -> tuple[Path, Path]:
    """Write ``base.index`` and ``base.dict.dz`` (``.dict`` unless
    ``compress``) for ``sample``; returns their paths. ``keep_original``
    writes dictfmt's --index-keep-orig form: a lower-cased headword first,
    the original in a fourth column."""
    text = bytearray()
    lines = []
    for headwords, body in sample:
        data = body.encode()
        offset = len(text)
        text += data
        for headword in headwords:
            first = headword.lower() if keep_original else headword
            fields = [first, encode_number(offset), encode_number(len(data))]
            if keep_original:
                fields.append(headword)
            lines.append("\t".join(fields))
    index_path = base.with_name(base.name + ".index")
    index_path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    if compress:
        text_path = base.with_name(base.name + ".dict.dz")
        text_path.write_bytes(dictzip(bytes(text)))
    else:
        text_path = base.with_name(base.name + ".dict")
        text_path.write_bytes(bytes(text))
    return index_path, text_path


def sample_text(word: str, sample=SAMPLE) -> list[str]:
    """The texts of every headword that is ``word`` up to case, in order."""
    from parallio.wiki import fold

    return [body for headwords, body in sample
            if any(fold(headword) == fold(word) for headword in headwords)]
