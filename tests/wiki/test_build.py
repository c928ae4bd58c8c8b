"""``wiki build``: finding the source, unpacking, indexing, progress, errors."""

from __future__ import annotations

import io
import os

import pytest

from parallio.wiki import build as build_module
from parallio.wiki.build import (INDEX_NAME, TEXT_NAME, BuildError, Progress, build,
                                 find_source)
from parallio.wiki.index import Index

from .dictd_files import SAMPLE, sample_text, words_of, write_dictd


def no_say(line: str) -> None:
    raise AssertionError(f"nothing should be said: {line}")


def test_find_source_by_any_of_its_names(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "sample")
    wanted = (str(index_path), str(text_path))
    for name in (index_path, text_path, tmp_path / "sample", tmp_path):
        assert find_source(str(name), install=False, say=no_say) == wanted


def test_plain_dict_is_found_too(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "plain", compress=False)
    assert find_source(str(index_path), False, no_say) == (str(index_path), str(text_path))


def test_source_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(BuildError, match="no dictd database there"):
        find_source(str(tmp_path / "missing.index"), False, no_say)
    write_dictd(tmp_path / "one")
    write_dictd(tmp_path / "two")
    with pytest.raises(BuildError, match=r"exactly one .*found: one.index, two.index"):
        find_source(str(tmp_path), False, no_say)
    monkeypatch.setattr(build_module, "DEFAULT_SOURCE", str(tmp_path / "nothing" / "gcide"))
    with pytest.raises(BuildError, match="install Debian's dict-gcide .* or pass --source"):
        find_source(None, install=False, say=no_say)


@pytest.mark.parametrize("keep_original", [False, True])
def test_build_unpacks_and_indexes(tmp_path, keep_original):
    index_path, text_path = write_dictd(tmp_path / "sample", keep_original=keep_original)
    log = io.StringIO()
    summary = build(str(index_path), str(text_path), str(tmp_path / "data"), Progress(log))
    text = (tmp_path / "data" / TEXT_NAME).read_bytes()
    assert text == "".join(body for _, body in SAMPLE).encode()
    index = Index((tmp_path / "data" / INDEX_NAME).read_bytes())
    assert (summary.keys, summary.entries, summary.title) == (
        index.keys, index.entries, "Sample Dictionary of Tests")
    assert index.title == summary.title and index.text_size == len(text)
    for word in words_of():
        match = index.lookup(word)
        assert match is not None, word
        # Shown as written, not as dictfmt's lower-cased first column.
        assert match.headword in words_of()
        texts = [text[offset:offset + length].decode() for offset, length in match.entries]
        assert texts == sample_text(word)
    assert index.lookup("00-database-short") is None
    lines = log.getvalue().splitlines()
    assert "  unpacking sample.dict.dz: 100%" in lines
    assert lines[-1].startswith(f"wiki: {index.keys} headwords")
    assert sorted(os.listdir(tmp_path / "data")) == sorted([TEXT_NAME, INDEX_NAME])


def test_progress_on_a_terminal_rewrites_one_line():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    update = Progress(out).step("unpacking")
    for done in (0, 50, 50, 100):
        update(done, 100)
    assert out.getvalue().startswith("\r  unpacking:   0%")
    assert out.getvalue().endswith("\r  unpacking: 100%\n")
    assert out.getvalue().count("\n") == 1


def test_an_index_pointing_past_its_text_fails_cleanly(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "sample", compress=False)
    text_path.write_bytes(text_path.read_bytes()[:100])
    with pytest.raises(BuildError, match="lies outside the 100-byte text; is .* its text"):
        build(str(index_path), str(text_path), str(tmp_path / "data"), Progress(io.StringIO()))
    assert os.listdir(tmp_path / "data") == []


def test_a_damaged_index_names_its_line(tmp_path):
    index_path, text_path = write_dictd(tmp_path / "sample")
    index_path.write_text(index_path.read_text() + "broken line\n")
    with pytest.raises(BuildError, match=r"sample.index: line \d+: expected headword"):
        build(str(index_path), str(text_path), str(tmp_path / "data"), Progress(io.StringIO()))
