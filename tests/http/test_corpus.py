"""Every file in tests/http/corpus must be refused with the status its name starts with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parallio.http.parser import HttpError, RequestParser

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.http"))


def expected_status(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def refusal(chunks: list[bytes]) -> HttpError:
    parser = RequestParser()
    try:
        for piece in chunks:
            parser.feed(piece)
            for _ in parser:
                pass
    except HttpError as error:
        return error
    raise AssertionError("accepted: no HttpError raised")


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 60


def test_readme_table_matches_the_files() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (\d{3}) \| .+ \|$", (CORPUS / "README.md").read_text(), re.M)
    assert sorted(rows) == sorted((path.name, str(expected_status(path))) for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_refused_with_documented_status(path: Path) -> None:
    data = path.read_bytes()
    status = expected_status(path)
    assert refusal([data]).status == status
    # The same verdict however the bytes arrive: byte by byte for small
    # files, in 997-byte reads for the big ones.
    step = 1 if len(data) < 4096 else 997
    assert refusal([data[i : i + step] for i in range(0, len(data), step)]).status == status
