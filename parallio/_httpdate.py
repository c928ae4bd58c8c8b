"""The HTTP date (IMF-fixdate), formatted at most once a second.

A leaf module: the HTTP response writer puts it in every ``Date`` header,
and PyParallel's ``gmtime()`` service returns it, without either depending
on the other.
"""

from __future__ import annotations

from time import gmtime, time

__all__ = ["http_date", "date_line"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _format_date(second: int) -> bytes:
    # By hand: strftime's %a and %b follow the locale; IMF-fixdate must not.
    t = gmtime(second)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday].encode(),
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode(),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def _render_date(second: int) -> tuple[int, int, bytes, bytes]:
    value = _format_date(second)
    return second, second + 1, value, b"Date: " + value + b"\r\n"


# (second, next second, IMF-fixdate, "Date: ...\r\n" line), replaced as one
# object so a reader never sees a value from one second and a line from
# another. A range test rather than int(now) == second: cheaper, and it also
# notices the clock stepping back.
_date = _render_date(int(time()))


def _current_date() -> tuple[int, int, bytes, bytes]:
    global _date
    cached = _date
    now = time()
    if not cached[0] <= now < cached[1]:
        cached = _date = _render_date(int(now))
    return cached


def http_date() -> bytes:
    """The current time as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``),
    formatted at most once per second."""
    global _date
    cached = _date
    now = time()
    if not cached[0] <= now < cached[1]:
        cached = _date = _render_date(int(now))
    return cached[2]


def date_line() -> bytes:
    """``Date: <http_date()>\\r\\n``, the whole header line."""
    return _current_date()[3]
