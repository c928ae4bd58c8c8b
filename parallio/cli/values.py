"""Types of command-line values: each turns text into a value or raises
``argparse.ArgumentTypeError``, whose message argparse prints after the
option's name (``argument --port: ...``). The configuration file and
``PARALLIO_*`` variables go through the same functions."""

from __future__ import annotations

import argparse
import math

__all__ = ["port", "positive_int", "non_negative_int", "seconds", "positive_seconds", "octal_mode", "log_level",
           "LOG_LEVELS"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    number = _integer(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port (0-65535)")
    return number


def positive_int(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: must be at least 1")
    return number


def non_negative_int(text: str) -> int:
    number = _integer(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number}: must be 0 or more")
    return number


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more seconds")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 seconds")
    return value


def octal_mode(text: str) -> int:
    """File permissions in octal: ``660``, ``0660`` or ``0o660``."""
    digits = text[2:] if text.lower().startswith("0o") else text
    try:
        mode = int(digits, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode such as 660") from None
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode (at most 7777)")
    return mode


def log_level(text: str) -> str:
    """A logging level name, in any case."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level; choose {', '.join(LOG_LEVELS).lower()}")
    return level
