"""The TechEmpower Framework Benchmark endpoints, on :class:`HttpServer`.

``python -m parallio tefb`` serves them on every core. The test types, as
that project specifies them:

* ``/json``: ``{"message": "Hello, World!"}``, serialized on every request.
* ``/plaintext``: ``Hello, World!`` as ``text/plain``.
* ``/db``: one random World row as ``{"id": .., "randomNumber": ..}``.
* ``/queries?queries=N``: N random rows, each its own query, as a list. N is
  clamped to 1..500; a missing or non-integer value counts as 1.
* ``/updates?queries=N``: like ``/queries``, then every row gets a new random
  ``randomNumber``, written back in one transaction; the updated rows are
  returned (a row drawn twice gets one new number, which both copies show).
* ``/fortunes``: every Fortune row plus the fortune "Additional fortune
  added at request time." (id 0), sorted by message, rendered as the
  benchmark's HTML table with every message HTML-escaped.

Every response carries ``Server``, ``Date``, ``Content-Type`` and
``Content-Length``; nothing is cached between requests. Each worker opens its
own database connection on first use (:mod:`parallio.http.tefb_db`).
"""

from __future__ import annotations

import random
import threading
from html import escape
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Optional

from .._ref import ObjectRef
from . import tefb_db
from .server import HttpServer

if TYPE_CHECKING:
    from ..transport import Transport
    from .parser import Request

__all__ = ["Tefb", "query_count"]

_EXTRA_FORTUNE = (0, "Additional fortune added at request time.")
_FORTUNES_HEAD = ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body>"
                  "<table><tr><th>id</th><th>message</th></tr>")
_FORTUNES_TAIL = "</table></body></html>"
_by_message = itemgetter(1)


def query_count(text: Optional[str]) -> int:
    """The ``queries`` parameter as the benchmark reads it: 1..500, with
    anything that is not an integer counting as 1."""
    if not text:
        return 1
    digits = text[1:] if text[0] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        return 1
    if text[0] == "-":
        return 1
    # Compare lengths first: int() of a huge digit string is slow.
    return 500 if len(digits.lstrip("0")) > 3 else min(max(int(digits), 1), 500)


class Tefb:
    """The benchmark application over the database at ``db`` (a URL; see
    :mod:`parallio.http.tefb_db`). Registered like a protocol class and sent
    to workers by value::

        parallio.register(parallio.server("0.0.0.0", 8080), Tefb("sqlite:///tmp/tefb.sqlite"))

    Call :meth:`prepare` on the main thread first to create the database.
    """

    def __init__(self, db: Optional[str] = None, *,
                 forwarded_allow_ips: Optional[str] = None) -> None:
        self.db = tefb_db.normalize(db or tefb_db.default_url())
        self.forwarded_allow_ips = forwarded_allow_ips
        self._local = threading.local()
        self._protocol: Optional[type] = None

    def prepare(self) -> None:
        """Create and fill the database if it is missing."""
        tefb_db.prepare(self.db)

    def __getstate__(self) -> dict[str, Any]:
        return {"db": self.db, "forwarded_allow_ips": self.forwarded_allow_ips}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["db"], forwarded_allow_ips=state["forwarded_allow_ips"])  # type: ignore[misc]

    def __parallio_ref__(self) -> ObjectRef:
        # The path names the module workers must import: for PostgreSQL
        # that is psycopg's user, so that ``auto`` checks it loads in an
        # isolated interpreter.
        module = "parallio.http.tefb_pg" if tefb_db.is_postgresql(self.db) else __name__
        return ObjectRef(f"{module}:Tefb", self, by_value=True)

    def __parallio_protocol__(self) -> type:
        if self._protocol is None:
            tefb_db.load_driver(self.db)
            self._protocol = self.server().protocol_class
        return self._protocol

    def server(self) -> HttpServer:
        """A new HttpServer with the benchmark's routes."""
        server = HttpServer(forwarded_allow_ips=self.forwarded_allow_ips)
        server.route("/json")(self.json)
        server.route("/plaintext")(self.plaintext)
        server.route("/db")(self.single_query)
        server.route("/queries")(self.queries)
        server.route("/updates")(self.updates)
        server.route("/fortunes")(self.fortunes)
        return server

    @property
    def database(self) -> tefb_db.Database:
        """This worker's connection (each worker runs on its own thread)."""
        database = getattr(self._local, "database", None)
        if database is None:
            database = self._local.database = tefb_db.connect(self.db)
        return database

    # -- the endpoints --------------------------------------------------------
    def json(self, transport: "Transport", request: "Request") -> dict[str, str]:
        return {"message": "Hello, World!"}

    def plaintext(self, transport: "Transport", request: "Request") -> bytes:
        return b"Hello, World!"

    def single_query(self, transport: "Transport", request: "Request") -> dict[str, int]:
        return self.database.world(random.randint(1, tefb_db.WORLD_ROWS))

    def queries(self, transport: "Transport", request: "Request",
                queries: Optional[str] = None) -> list[dict[str, int]]:
        world = self.database.world
        randint = random.randint
        return [world(randint(1, tefb_db.WORLD_ROWS)) for _ in range(query_count(queries))]

    def updates(self, transport: "Transport", request: "Request",
                queries: Optional[str] = None) -> list[dict[str, int]]:
        database = self.database
        randint = random.randint
        worlds = [database.world(randint(1, tefb_db.WORLD_ROWS))
                  for _ in range(query_count(queries))]
        # One new number per row: a row drawn twice is written once, and
        # both of its copies in the response say what the table holds.
        numbers = {world["id"]: randint(1, tefb_db.WORLD_ROWS) for world in worlds}
        for world in worlds:
            world["randomNumber"] = numbers[world["id"]]
        database.update_worlds(list(numbers.items()))
        return worlds

    def fortunes(self, transport: "Transport", request: "Request") -> str:
        rows = self.database.fortunes()
        rows.append(_EXTRA_FORTUNE)
        rows.sort(key=_by_message)
        return "".join([
            _FORTUNES_HEAD,
            *[f"<tr><td>{fortune_id}</td><td>{escape(message)}</td></tr>"
              for fortune_id, message in rows],
            _FORTUNES_TAIL,
        ])
