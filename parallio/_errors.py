"""Errors for people: one line saying what failed, then the user's own
traceback, once -- without the frames of parallio and of the import
machinery that every such traceback passes through."""

from __future__ import annotations

import os
import traceback

__all__ = ["user_traceback", "describe"]

# What parallio never raises on purpose: raised by its own code, these are
# bugs, and their whole traceback is what a report needs.
_BUGS = (AssertionError, RecursionError, NotImplementedError, LookupError, NameError,
         ZeroDivisionError)

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB = os.path.dirname(os.path.abspath(traceback.__file__)) + os.sep + "importlib" + os.sep


def _internal(filename: str) -> bool:
    return (filename.startswith(_PACKAGE) or filename.startswith(_IMPORTLIB)
            or filename.startswith("<frozen importlib"))


def user_traceback(exc: BaseException) -> str:
    """``exc`` as Python prints it, with only the frames of code that is not
    parallio's or importlib's (none left: just the exception's line, or for
    a SyntaxError the line it points at)."""
    summary = traceback.TracebackException.from_exception(exc)
    frames = [frame for frame in summary.stack if not _internal(frame.filename)]
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.StackSummary.from_list(frames).format()
    lines += summary.format_exception_only()
    return "".join(lines).rstrip("\n")


def _raised_by_user(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return isinstance(exc, SyntaxError) or (last is not None and not _internal(last))


def describe(exc: BaseException) -> str:
    """One line for ``exc``, then, when code other than parallio's raised it
    (or what it was raised from), that code's traceback."""
    cause = exc.__cause__
    if cause is not None and _raised_by_user(cause):
        return f"{exc}\n{user_traceback(cause)}"
    if _raised_by_user(exc):
        return f"{type(exc).__name__}: {exc}\n{user_traceback(exc)}"
    if isinstance(exc, _BUGS):
        # Not an error parallio meant to raise: the whole story, for a report.
        return "".join(traceback.format_exception(exc)).rstrip("\n")
    return str(exc) or type(exc).__name__
