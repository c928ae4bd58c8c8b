"""Reading dictd databases: base-64 numbers, index lines, the dictzip text."""

from __future__ import annotations

import gzip
import io

import pytest
from hypothesis import given, strategies as st

from parallio.wiki.dictd import (DictdFormatError, database_title, decode_number,
                                 encode_number, parse_index, unpack)
from parallio.wiki.index import Record

from .dictd_files import SAMPLE, dictzip, write_dictd


@pytest.mark.parametrize("digits, value", [
    (b"A", 0), (b"B", 1), (b"/", 63), (b"BA", 64), (b"AAB", 1),
    # From dict-gcide's index: "0" is at 5I (3656), 371 (Fz) bytes long.
    (b"5I", 3656), (b"Fz", 371), (b"CJjl", 2 * 64**3 + 9 * 64**2 + 35 * 64 + 37),
])
def test_decode_number(digits, value):
    assert decode_number(digits) == value


@given(st.integers(0, 2**64 - 1))
def test_number_round_trip(value):
    digits = encode_number(value)
    assert decode_number(digits.encode()) == value
    assert value == 0 or not digits.startswith("A")


@pytest.mark.parametrize("digits", [b"", b"A=", b"AB C", b"\xc3\xa9", b"B" * 12])
def test_bad_numbers(digits):
    with pytest.raises(ValueError):
        decode_number(digits)


def test_parse_index_lines():
    data = ("apple\tA\tK\r\n\n"
            "00-database-short\tK\tF\n"
            "bank\tBA\tC\tBank\n"       # dictfmt --index-keep-orig
            "café\tBK\tB\t\n").encode()
    parsed = parse_index(data)
    assert parsed.encoding == "utf-8"
    assert parsed.records == [Record("apple", 0, 10), Record("Bank", 64, 2),
                              Record("café", 74, 1)]
    assert parsed.info == [Record("00-database-short", 10, 5)]


def test_latin1_index():
    parsed = parse_index("caf\xe9\tA\tB\n".encode("latin-1"))
    assert parsed.encoding == "latin-1"
    assert parsed.records == [Record("café", 0, 1)]


@pytest.mark.parametrize("line, message", [
    ("apple\tA", "line 2: expected headword, offset and length"),
    ("apple\tA\t!", "line 2: '!' is not a dictd base-64 digit"),
    ("apple\t\tB", "line 2: b'' is not a dictd number"),
])
def test_bad_lines_are_named(line, message):
    with pytest.raises(DictdFormatError, match=message):
        parse_index(f"fine\tA\tB\n{line}\n".encode())


def test_dictzip_unpacks_with_progress(tmp_path):
    text = ("".join(body for _, body in SAMPLE) * 40).encode()
    packed = dictzip(text, chunk_length=997)
    assert gzip.decompress(packed) == text  # what real gzip makes of it
    path = tmp_path / "sample.dict.dz"
    path.write_bytes(packed)
    seen = []
    out = io.BytesIO()
    assert unpack(path, out, lambda done, total: seen.append((done, total))) == len(text)
    assert out.getvalue() == text
    assert seen[-1] == (len(packed), len(packed))
    assert all(done <= total for done, total in seen)


def test_plain_dict_is_copied(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "plain", compress=False)
    out = io.BytesIO()
    size = unpack(text_path, out)
    assert out.getvalue() == text_path.read_bytes() and size == text_path.stat().st_size


def test_title_from_the_short_name(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "sample", compress=False)
    parsed = parse_index(index_path.read_bytes())
    with open(text_path, "rb") as text:
        assert database_title(parsed, text) == "Sample Dictionary of Tests"
    assert all(not record.headword.startswith("00-") for record in parsed.records)
    assert {record.headword for record in parsed.info} == {"00-database-short",
                                                           "00-database-url"}
