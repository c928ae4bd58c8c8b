"""The TechEmpower endpoints on real sockets in every host and engine, on
SQLite and (when scripts/postgres.sh could start one) PostgreSQL; and
``python -m parallio tefb`` as a user runs it."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import sqlite3

import pytest

from parallio import WorkerStartupError
from parallio.host import InterpretersHost
from parallio.http import tefb_db
from parallio.http.tefb import Tefb, query_count
from parallio._ref import ObjectRef

from ._http_client import Client, address_of
from .conftest import serving
from .test_cli import start_cli, stop

POSTGRES = os.environ.get("PARALLIO_TEST_POSTGRES")


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('tefb')}/world.sqlite"
    Tefb(url).prepare()
    return url


def world_rows(url):
    path = url[len("sqlite://"):]
    with sqlite3.connect(path) as connection:
        return dict(connection.execute("SELECT id, randomNumber FROM World"))


def check_endpoints(client, rows_of=None):
    """Every test type's rules, as the benchmark's verifier checks them."""
    reply = client.get("/json")
    assert json.loads(reply.body) == {"message": "Hello, World!"}
    assert reply.headers["content-type"] == "application/json"
    for name in ("server", "date", "content-length"):
        assert name in reply.headers
    reply = client.get("/plaintext")
    assert reply.body == b"Hello, World!" and reply.headers["content-type"].startswith("text/plain")

    world = json.loads(client.get("/db").body)
    assert set(world) == {"id", "randomNumber"}
    assert 1 <= world["id"] <= 10_000 and 1 <= world["randomNumber"] <= 10_000

    for value, count in [("2", 2), ("20", 20), ("0", 1), ("-5", 1), ("501", 500),
                         ("99999999999999999999", 500), ("abc", 1), ("", 1), (None, 1)]:
        target = "/queries" if value is None else f"/queries?queries={value}"
        worlds = json.loads(client.get(target).body)
        assert isinstance(worlds, list) and len(worlds) == count, value
        assert all(set(w) == {"id", "randomNumber"} and 1 <= w["id"] <= 10_000 for w in worlds)

    updated = json.loads(client.get("/updates?queries=15").body)
    assert len(updated) == 15 and json.loads(client.get("/updates?queries=x").body)
    if rows_of is not None:
        # 500 draws from 10,000 rows: some row is drawn twice (all but
        # certainly). Every copy in the response is what the table holds.
        for _ in range(3):
            updated = json.loads(client.get("/updates?queries=500").body)
            assert len({w["id"] for w in updated}) < 500
            stored = rows_of()
            assert [w["randomNumber"] for w in updated] == [stored[w["id"]] for w in updated]

    reply = client.get("/fortunes")
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    page = reply.body.decode("utf-8")
    assert page.startswith("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
                           "<tr><th>id</th><th>message</th></tr>")
    assert page.endswith("</table></body></html>")
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", page)
    messages = [html.unescape(message) for _, message in rows]
    assert len(rows) == 13 and messages == sorted(messages)
    assert ("0", "Additional fortune added at request time.") in rows
    assert ("11", "&lt;script&gt;alert(&quot;This should not be displayed in a browser alert "
                  "box.&quot;);&lt;/script&gt;") in rows
    assert "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af" \
        in messages


def test_endpoints_on_sqlite(combo, sqlite_url):
    with serving(Tefb(sqlite_url), combo, workers=2) as runtime, \
            Client(address_of(runtime)) as client:
        check_endpoints(client, lambda: world_rows(sqlite_url))


def test_concurrent_updates_on_sqlite(sqlite_url):
    with serving(Tefb(sqlite_url), ("processes", "epoll"), workers=2) as runtime:
        clients = [Client(address_of(runtime)) for _ in range(6)]
        try:
            for client in clients:
                client.send(b"GET /updates?queries=50 HTTP/1.1\r\nHost: t\r\n\r\n" * 5)
            for client in clients:
                for _ in range(5):
                    assert len(json.loads(client.read().body)) == 50
        finally:
            for client in clients:
                client.sock.close()


def test_database_is_created_once(tmp_path):
    url = f"sqlite:///{tmp_path}/sub/dir/t.sqlite"
    tefb_db.prepare(url)
    rows = world_rows(url)
    assert sorted(rows) == list(range(1, 10_001))
    assert all(1 <= number <= 10_000 for number in rows.values())
    tefb_db.prepare(url)  # already there: left alone
    assert world_rows(url) == rows
    with sqlite3.connect(url[len("sqlite://"):]) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT count(*) FROM Fortune").fetchone()[0] == 12
    assert not [name for name in os.listdir(tmp_path / "sub" / "dir") if name.endswith(".tmp")]


def test_query_count():
    for text, count in [(None, 1), ("", 1), ("1", 1), ("7", 7), ("500", 500), ("501", 500),
                        ("0", 1), ("-1", 1), ("+3", 3), ("abc", 1), ("1.5", 1), (" 5", 1),
                        ("\u0665", 1), ("0007", 7), ("9" * 5000, 500), ("0" * 50 + "3", 3)]:
        assert query_count(text) == count, text


def test_refs_travel_by_value():
    ref = ObjectRef.of(Tefb("sqlite:///tmp/x.sqlite"))
    assert ref.by_value and ref.path == "parallio.http.tefb:Tefb"
    ref = ObjectRef.of(Tefb("postgresql://u@h:1/db"))
    assert ref.path == "parallio.http.tefb_pg:Tefb"  # auto checks psycopg imports
    assert Tefb("sqlite:relative.sqlite").db == "sqlite:///" + os.path.abspath("relative.sqlite").lstrip("/")
    with pytest.raises(ValueError):
        tefb_db.connect("mysql://nope")


@pytest.mark.skipif(not POSTGRES, reason="PARALLIO_TEST_POSTGRES is not set: scripts/postgres.sh "
                                         "could not start a PostgreSQL server")
@pytest.mark.parametrize("host", ["threads", "processes", "auto"])
def test_endpoints_on_postgresql(host, caplog):
    pytest.importorskip("psycopg")
    app = Tefb(POSTGRES)
    app.prepare()

    def rows_of():
        import psycopg

        with psycopg.connect(POSTGRES) as connection:
            return dict(connection.execute("SELECT id, randomNumber FROM World").fetchall())

    with caplog.at_level(logging.INFO, logger="parallio"), \
            serving(app, (host, "epoll"), workers=2) as runtime, \
            Client(address_of(runtime)) as client:
        if host == "auto" and InterpretersHost.unavailable_reason() is None:
            # psycopg decides: isolated interpreters if it loads in one,
            # else processes, and the log says why.
            problem = InterpretersHost.import_problem(["parallio.http.tefb_pg"], None)
            assert runtime.host.name == ("interpreters" if problem is None else "processes")
            if problem is not None:
                assert "does not import in an isolated subinterpreter" in caplog.text
        check_endpoints(client, rows_of)


@pytest.mark.skipif(not POSTGRES, reason="PARALLIO_TEST_POSTGRES is not set")
@pytest.mark.skipif(InterpretersHost.unavailable_reason() is not None,
                    reason="isolated interpreters need 3.13+")
def test_postgresql_in_interpreters_loads_or_fails_at_start():
    pytest.importorskip("psycopg")
    app = Tefb(POSTGRES)
    if InterpretersHost.import_problem(["parallio.http.tefb_pg"], None) is None:
        with serving(app, ("interpreters", "epoll")) as runtime, Client(address_of(runtime)) as client:
            assert len(json.loads(client.get("/queries?queries=3").body)) == 3
    else:
        with pytest.raises(WorkerStartupError, match="psycopg|datetime"):
            with serving(app, ("interpreters", "epoll")):
                pass


def test_command(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.sqlite"
    process, port = start_cli("tefb", "--db", url, "--workers", "2", "--io", "epoll")
    try:
        with Client(("127.0.0.1", port)) as client:
            check_endpoints(client)
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert os.path.exists(url[len("sqlite://"):])
