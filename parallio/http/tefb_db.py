"""The TechEmpower database, on SQLite or PostgreSQL.

Two tables, as the benchmark specifies: ``World`` (10,000 rows: ``id``
1..10000 and ``randomNumber`` 1..10000) and ``Fortune`` (the 12 standard
messages). :func:`prepare` creates and fills them if they are missing; the
main thread calls it once before any worker starts. Each worker then opens
its own connection with :func:`connect` (connections are never shared).

URLs: ``sqlite:///absolute/path.sqlite`` (or ``sqlite:relative/path``) and
``postgresql://user@host:port/database``. SQLite runs in WAL mode, so
readers never wait for a writer, with a busy timeout so that concurrent
``/updates`` wait for each other instead of failing.

Database calls block their worker while they run (a local SQLite query is a
few microseconds; a PostgreSQL round trip over loopback tens).
"""

from __future__ import annotations

import os
import random
from typing import Any, Protocol

__all__ = ["WORLD_ROWS", "FORTUNES", "Database", "default_url", "normalize", "prepare",
           "load_driver", "connect", "is_postgresql"]

WORLD_ROWS = 10_000

#: The Fortune table, as the benchmark defines it.
FORTUNES: list[tuple[int, str]] = [
    (1, "fortune: No such file or directory"),
    (2, "A computer scientist is someone who fixes things that aren't broken."),
    (3, "After enough decimal places, nobody gives a damn."),
    (4, "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1"),
    (5, "A computer program does what you tell it to do, not what you want it to do."),
    (6, "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen"),
    (7, "Any program that runs right is obsolete."),
    (8, "A list is only as strong as its weakest link. \u2014 Donald Knuth"),
    (9, "Feature: A bug with seniority."),
    (10, "Computers make very fast, very accurate mistakes."),
    (11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
    (12, "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af"),
]

# SQLite waits this long for another worker's write before failing.
_BUSY_TIMEOUT_MS = 10_000


class Database(Protocol):
    """One worker's connection."""

    def world(self, world_id: int) -> dict[str, int]:
        """Row ``world_id`` of World as ``{"id": .., "randomNumber": ..}``."""

    def update_worlds(self, rows: list[tuple[int, int]]) -> None:
        """Set ``randomNumber`` of each ``(id, randomNumber)`` in one
        transaction (each id once)."""

    def fortunes(self) -> list[tuple[int, str]]:
        """Every row of Fortune as ``(id, message)``."""


def default_url() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return "sqlite:///" + os.path.join(cache, "parallio", "tefb.sqlite").lstrip("/")


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "/" + url[len("sqlite:///"):]
    if url.startswith("sqlite:"):
        return os.path.abspath(url[len("sqlite:"):])
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def normalize(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (workers may not
    share the current directory's meaning with the main thread forever)."""
    if is_postgresql(url):
        return url
    return "sqlite:///" + _sqlite_path(url).lstrip("/")


def _rows() -> list[tuple[int, int]]:
    return [(world_id, random.randint(1, WORLD_ROWS)) for world_id in range(1, WORLD_ROWS + 1)]


def prepare(url: str) -> None:
    """Create and fill the tables if they are missing (main thread, once)."""
    if is_postgresql(url):
        _prepare_postgresql(url)
    else:
        _prepare_sqlite(_sqlite_path(url))


def _prepare_sqlite(path: str) -> None:
    import sqlite3

    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Built under a temporary name and renamed: a second server starting at
    # the same moment sees either no database or a complete one.
    temporary = f"{path}.{os.getpid()}.tmp"
    connection = sqlite3.connect(temporary, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN")
        connection.execute("CREATE TABLE World (id INTEGER PRIMARY KEY, "
                           "randomNumber INTEGER NOT NULL DEFAULT 0)")
        connection.execute("CREATE TABLE Fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL)")
        connection.executemany("INSERT INTO World (id, randomNumber) VALUES (?, ?)", _rows())
        connection.executemany("INSERT INTO Fortune (id, message) VALUES (?, ?)", FORTUNES)
        connection.execute("COMMIT")
        # Fold the WAL into the file so the rename moves everything.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    os.replace(temporary, path)
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(temporary + suffix)
        except FileNotFoundError:
            pass


def _prepare_postgresql(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS World (id integer PRIMARY KEY, "
                           "randomNumber integer NOT NULL DEFAULT 0)")
        connection.execute("CREATE TABLE IF NOT EXISTS Fortune (id integer PRIMARY KEY, "
                           "message varchar(2048) NOT NULL)")
        with connection.transaction(), connection.cursor() as cursor:
            # ON CONFLICT: two servers preparing at once both succeed.
            cursor.executemany("INSERT INTO World (id, randomNumber) VALUES (%s, %s) "
                               "ON CONFLICT (id) DO NOTHING", _rows())
            cursor.executemany("INSERT INTO Fortune (id, message) VALUES (%s, %s) "
                               "ON CONFLICT (id) DO NOTHING", FORTUNES)


def load_driver(url: str) -> None:
    """Import the driver ``url`` needs, so that a worker that cannot load it
    fails as it starts rather than on its first request."""
    if is_postgresql(url):
        import psycopg  # noqa: F401
    else:
        import sqlite3  # noqa: F401


def connect(url: str) -> Database:
    """A new connection for the calling worker."""
    if is_postgresql(url):
        return _Postgres(url)
    return _Sqlite(_sqlite_path(url))


class _Sqlite:
    def __init__(self, path: str) -> None:
        import sqlite3

        if not os.path.exists(path):
            raise FileNotFoundError(f"no database at {path}: prepare() it first")
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self.connection.execute("PRAGMA synchronous=NORMAL")

    def world(self, world_id: int) -> dict[str, int]:
        row = self.connection.execute(
            "SELECT id, randomNumber FROM World WHERE id = ?", (world_id,)).fetchone()
        return {"id": row[0], "randomNumber": row[1]}

    def update_worlds(self, rows: list[tuple[int, int]]) -> None:
        connection = self.connection
        # IMMEDIATE takes the write lock now (waiting up to the busy
        # timeout) instead of failing halfway through on an upgrade.
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany("UPDATE World SET randomNumber = ? WHERE id = ?",
                                   [(number, world_id) for world_id, number in rows])
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def fortunes(self) -> list[tuple[int, str]]:
        return self.connection.execute("SELECT id, message FROM Fortune").fetchall()


class _Postgres:
    def __init__(self, url: str) -> None:
        import psycopg

        self.connection: Any = psycopg.connect(url, autocommit=True)

    def world(self, world_id: int) -> dict[str, int]:
        row = self.connection.execute(
            "SELECT id, randomNumber FROM World WHERE id = %s", (world_id,)).fetchone()
        return {"id": row[0], "randomNumber": row[1]}

    def update_worlds(self, rows: list[tuple[int, int]]) -> None:
        connection = self.connection
        # Sorted by id: concurrent updates lock rows in the same order and
        # so cannot deadlock.
        with connection.transaction(), connection.cursor() as cursor:
            cursor.executemany("UPDATE World SET randomNumber = %s WHERE id = %s",
                               [(number, world_id) for world_id, number in sorted(rows)])

    def fortunes(self) -> list[tuple[int, str]]:
        return self.connection.execute("SELECT id, message FROM Fortune").fetchall()
