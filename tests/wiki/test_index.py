"""The index format and its search, sans-I/O: round trips, folding, prefix
search edge cases, refusing what is not an index."""

from __future__ import annotations

import struct
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from parallio.wiki.index import (MAGIC, MAX_LIMIT, Index, IndexFormatError, Record, build_index,
                                  fold, parse_limit, search_document)

TEXT_SIZE = 10_000

WORDS = ["apple", "Apple", "apricot", "application", "Bank", "Café", "cafeteria", "naïve",
         "Straße", "strass", "\u00c9cole", "Ωmega", "日本", "and/or", "zymurgy"]


def records_of(words: list[str]) -> list[Record]:
    return [Record(word, 100 * number, 10 + number) for number, word in enumerate(words)]


@pytest.fixture(scope="module")
def index() -> Index:
    return Index(build_index(records_of(WORDS), TEXT_SIZE, "Sample"))


def headwords(matches) -> list[str]:
    return [match.headword for match in matches]


# -- the format -------------------------------------------------------------------------

def test_round_trip_keeps_every_key_headword_and_entry(index):
    assert (index.keys, index.entries, index.text_size, index.title) == (14, 15, TEXT_SIZE,
                                                                         "Sample")
    keys = [index.key(number) for number in range(index.keys)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert keys == sorted({fold(word).encode() for word in WORDS})
    by_headword = {index.match(number).headword: index.match(number)
                   for number in range(index.keys)}
    assert by_headword["Café"].entries == ((500, 15),)
    # apple and Apple fold together: one key, two entries in text order,
    # shown as the headword given first.
    assert by_headword["apple"].entries == ((0, 10), (100, 11))
    assert "Apple" not in by_headword
    assert sum(len(match.entries) for match in by_headword.values()) == index.entries


def test_same_source_same_bytes_and_build_id():
    first = build_index(records_of(WORDS), TEXT_SIZE)
    again = build_index(list(reversed(records_of(WORDS))), TEXT_SIZE)
    other = build_index(records_of(WORDS[:-1]), TEXT_SIZE)
    assert Index(first).build_id == Index(build_index(records_of(WORDS), TEXT_SIZE)).build_id
    assert Index(first).build_id != Index(other).build_id
    # Order of the source only decides display headwords ("apple" vs "Apple").
    assert Index(again).keys == Index(first).keys
    assert Index(first).nbytes == len(first) and len(first) % 8 == 0


def test_a_range_repeated_under_one_key_is_kept_once():
    index = Index(build_index([Record("Bank", 0, 5), Record("bank", 0, 5),
                               Record("BANK", 7, 3)], 20))
    assert index.keys == 1
    assert index.match(0) == (0, "Bank", ((0, 5), (7, 3)))


def test_empty_index():
    index = Index(build_index([], 0))
    assert (index.keys, index.entries, index.title) == (0, 0, "")
    assert index.search("", 10) == ([], False)
    assert index.lookup("a") is None


def test_reads_in_place_from_a_memoryview(index):
    data = bytearray(build_index(records_of(WORDS), TEXT_SIZE))
    view = memoryview(data).toreadonly()
    in_place = Index(view)
    assert headwords(in_place.search("ap", 10).matches) == ["apple", "application", "apricot"]
    with pytest.raises(BufferError):
        data.extend(b"x")  # the index holds views of the buffer, not a copy


def test_entries_outside_the_text_are_refused():
    with pytest.raises(ValueError, match="outside the 100-byte text"):
        build_index([Record("word", 90, 11)], 100)
    with pytest.raises(ValueError, match="outside"):
        build_index([Record("word", -1, 1)], 100)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:40], "too short"),
    (lambda data: b"NOTWIKI!" + data[8:], "wrong magic"),
    (lambda data: data[:-8], "truncated or damaged"),
    (lambda data: data + b"\0" * 8, "truncated or damaged"),
    (lambda data: data[:8] + struct.pack("=H", 99) + data[10:], "version 99"),
    (lambda data: data[:10] + struct.pack("=H", 0xFFFE) + data[12:], "other byte order"),
])
def test_what_is_not_an_index_is_refused(damage, message):
    data = build_index(records_of(WORDS), TEXT_SIZE)
    assert data.startswith(MAGIC)
    with pytest.raises(IndexFormatError, match=message):
        Index(damage(data))


def test_sections_that_disagree_with_the_header_are_refused():
    data = bytearray(build_index(records_of(WORDS), TEXT_SIZE))
    keys = struct.unpack_from("=Q", data, 16)[0]
    struct.pack_into("=I", data, 64 + 8 * keys + 4 * keys, 1)  # the last key_starts entry
    with pytest.raises(IndexFormatError, match="disagree"):
        Index(bytes(data))


# -- folding and search -----------------------------------------------------------------

def test_fold_is_casefold_then_nfc():
    assert fold("Straße") == "strasse"
    assert fold("ΣΊΣΥΦΟΣ") == fold("σίσυφος") == fold("σίσυφοσ")
    assert fold("E\u0301cole") == fold("\u00c9cole") == "\u00e9cole"
    assert unicodedata.is_normalized("NFC", fold("I\u0307"))


def test_search_is_case_insensitive_and_ordered(index):
    found = index.search("AP", 10)
    assert headwords(found.matches) == ["apple", "application", "apricot"]
    assert not found.more
    assert headwords(index.search("appl", 10).matches) == ["apple", "application"]


def test_empty_prefix_starts_every_key(index):
    found = index.search("", 3)
    assert [match.number for match in found.matches] == [0, 1, 2]
    assert found.more
    assert len(index.search("", 100).matches) == index.keys


@pytest.mark.parametrize("prefix, expected", [
    ("caf", ["cafeteria", "Café"]),           # code point order: e < é
    ("CAFÉ", ["Café"]),
    ("cafe\u0301", ["Café"]),              # decomposed query, composed key
    ("na\u00efv", ["naïve"]),
    ("strasse", ["Straße"]),                  # ß folds to ss ...
    ("stras", ["strass", "Straße"]),          # ... and sorts as it
    ("\u00e9", ["\u00c9cole"]),
    ("ωM", ["Ωmega"]),
    ("日", ["日本"]),
    ("and/", ["and/or"]),
])
def test_non_ascii_prefixes(index, prefix, expected):
    assert headwords(index.search(prefix, 10).matches) == expected


@pytest.mark.parametrize("prefix", ["zz", "zymurgyx", "\U0010ffff", "\uffff", "日本語", "0"])
def test_prefixes_past_the_end_or_between_keys_find_nothing(index, prefix):
    assert index.search(prefix, 10) == ([], False)


def test_limit_bounds(index):
    assert index.search("ap", 0) == ([], True)
    assert headwords(index.search("ap", 1).matches) == ["apple"]
    assert index.search("ap", 1).more
    assert len(index.search("ap", 2).matches) == 2
    assert not index.search("ap", 3).more
    assert len(index.search("ap", 10**9).matches) == 3
    with pytest.raises(ValueError, match="limit"):
        index.search("ap", -1)


def test_the_limit_of_a_request(index):
    assert [parse_limit(text) for text in ("1", "10", "010", str(MAX_LIMIT))] == [
        1, 10, 10, MAX_LIMIT]
    for text in ("", "0", "-1", "+5", str(MAX_LIMIT + 1), "1.5", "١٢", "9" * 50):
        with pytest.raises(ValueError, match="limit must be a whole number"):
            parse_limit(text)
    assert search_document(index, "Ba", 5) == {
        "q": "Ba", "more": False, "results": [{"headword": "Bank", "entries": ((400, 14),)}]}


def test_lookup_is_exact_up_to_case(index):
    assert index.lookup("APPLE").headword == "apple"
    assert index.lookup("strasse").headword == "Straße"
    assert index.lookup("Cafe\u0301").headword == "Café"
    assert index.lookup("appl") is None
    assert index.lookup("apples") is None
    assert index.lookup("") is None
    with pytest.raises(IndexError):
        index.match(index.keys)


def test_prefixes_near_the_8_byte_numbers():
    words = ["a", "a\0", "a\0b", "ab", "abcdefgh", "abcdefghi", "abcdefgz", "\U0010ffff" * 3]
    index = Index(build_index(records_of(words), TEXT_SIZE))
    cases = {"a\0": ["a\0", "a\0b"], "a": ["a", "a\0", "a\0b", "ab", "abcdefgh",
                                             "abcdefghi", "abcdefgz"],
             "abcdefgh": ["abcdefgh", "abcdefghi"], "abcdefghi": ["abcdefghi"],
             "abcdefg": ["abcdefgh", "abcdefghi", "abcdefgz"], "\U0010ffff" * 2: [
                 "\U0010ffff" * 3], "\U0010ffff" * 4: []}
    for prefix, expected in cases.items():
        assert headwords(index.search(prefix, 10).matches) == expected, prefix
        assert index.search(prefix, max(len(expected) - 1, 0)).more == bool(expected), prefix


word = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(word, max_size=40), word, st.integers(0, 8))
def test_search_agrees_with_a_sorted_list(words, prefix, limit):
    index = Index(build_index(records_of(words), 10**6))
    keys = sorted({fold(w).encode() for w in words})
    needle = fold(prefix).encode()
    wanted = [key for key in keys if key.startswith(needle)]
    found = index.search(prefix, limit)
    assert [index.key(match.number) for match in found.matches] == wanted[:limit]
    assert found.more == (len(wanted) > limit)
    for key in keys:
        assert index.lookup(key.decode()) is not None
