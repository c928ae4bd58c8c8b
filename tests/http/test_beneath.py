"""The kernel-side resolution of static file paths (openat2 RESOLVE_BENEATH)."""

import os
import stat

import pytest

from parallio.http import _beneath
from parallio.http._beneath import open_beneath, reopen_for_reading

pytestmark = pytest.mark.skipif(not _beneath._usable, reason="no openat2 here")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_bytes(b"inside")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.symlink("sub/file.txt", root / "relative-in")
    os.symlink("../secret.txt", root / "relative-out")
    os.symlink(root / "sub" / "file.txt", root / "absolute-in")
    os.mkfifo(root / "fifo")
    return os.fsencode(root)


def opened(root, relative):
    result = open_beneath(root, relative)
    if result is None:
        return None
    fd, info = result
    os.close(fd)
    return info


def test_regular_files_and_relative_symlinks_inside_are_resolved(root):
    for relative in (b"sub/file.txt", b"relative-in"):
        result = open_beneath(root, relative)
        assert result is not None
        fd, info = result
        try:
            assert stat.S_ISREG(info.st_mode) and info.st_size == 6
            read_fd = reopen_for_reading(fd)
            assert read_fd is not None
            with open(read_fd, "rb") as file:
                assert file.read() == b"inside"
        finally:
            os.close(fd)
    assert stat.S_ISDIR(opened(root, b"sub").st_mode)
    assert stat.S_ISDIR(opened(root, b"").st_mode)  # the root itself


def test_paths_leaving_the_root_are_not_answered(root):
    # EXDEV: the caller resolves these the slow way (and refuses the ones out).
    assert opened(root, b"relative-out") is None
    assert opened(root, b"sub/../../secret.txt") is None
    # RESOLVE_BENEATH refuses absolute symlinks even when they point inside.
    assert opened(root, b"absolute-in") is None


def test_missing_files_and_fifos(root):
    with pytest.raises(FileNotFoundError):
        open_beneath(root, b"nothing")
    with pytest.raises(NotADirectoryError):
        open_beneath(root, b"sub/file.txt/more")
    # O_PATH: a FIFO with no writer is opened without blocking, for its status only.
    assert stat.S_ISFIFO(opened(root, b"fifo").st_mode)
