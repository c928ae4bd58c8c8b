"""Fixtures of the wiki tests: the sample dictionary built once, and the
real corpus (Debian's dict-gcide, which scripts/test installs) when the
machine has it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from parallio.wiki.build import DEFAULT_SOURCE, Progress, build

from .dictd_files import write_dictd


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """The data directory of the sample dictionary (tests/wiki/dictd_files.py)."""
    root = tmp_path_factory.mktemp("wiki-sample")
    index_path, text_path = write_dictd(root / "sample")
    data = root / "data"
    build(str(index_path), str(text_path), str(data), Progress(io.StringIO()))
    return data


@pytest.fixture(scope="session")
def gcide_data(tmp_path_factory) -> Path:
    """The data directory of dict-gcide; skips when it is not installed."""
    if not os.path.isfile(DEFAULT_SOURCE + ".index"):
        pytest.skip(f"{DEFAULT_SOURCE}.index is missing: Debian's dict-gcide is not installed "
                    "(scripts/test installs it where it may)")
    data = tmp_path_factory.mktemp("wiki-gcide")
    build(DEFAULT_SOURCE + ".index", DEFAULT_SOURCE + ".dict.dz", str(data),
          Progress(io.StringIO()))
    return data
