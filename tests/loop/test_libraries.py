"""Real asyncio libraries from PyPI on parallio's loop: aiohttp's server and
client talking to each other, and psycopg's async mode (add_reader /
add_writer) against the PostgreSQL server scripts/postgres.sh starts."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

import parallio.loop
from parallio.host import InterpretersHost

from ..conftest import ENGINES, engine_skip_reason

pytestmark = pytest.mark.timeout(90)

POSTGRES = os.environ.get("PARALLIO_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES, reason="PARALLIO_TEST_POSTGRES is not set: scripts/postgres.sh could not "
                         "start a PostgreSQL server")

AIOHTTP_REPLIES = [f"hello {number}" for number in range(50)] + ["200 180000 STREAMED "]


@pytest.mark.parametrize("engine", ENGINES)
def test_aiohttp_client_and_server_on_the_loop(engine):
    pytest.importorskip("aiohttp")
    if engine_skip_reason(engine):
        pytest.skip(engine_skip_reason(engine))
    from ._programs import aiohttp_round_trips

    assert parallio.loop.run(aiohttp_round_trips(50), io=engine) == AIOHTTP_REPLIES


def _host_auto_picks(modules: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """The host ``auto`` is expected to pick for ``modules``, checked
    against the log line that says why."""
    if InterpretersHost.unavailable_reason() is not None:
        return "threads or processes"
    problem = InterpretersHost.import_problem(modules, None)
    if problem is None:
        return "interpreters"
    assert "does not import in an isolated subinterpreter" in caplog.text
    return "processes"


def test_aiohttp_in_the_workers_auto_picks(caplog):
    pytest.importorskip("aiohttp")
    with caplog.at_level(logging.INFO, logger="parallio"):
        results = parallio.loop.run_on_all_cores("tests.loop._programs:aiohttp_round_trips",
                                                 workers=2, args=(10,), imports=["aiohttp.web"])
    assert results == [AIOHTTP_REPLIES[:10] + AIOHTTP_REPLIES[-1:]] * 2
    _host_auto_picks(["aiohttp.web"], caplog)


@needs_postgres
@pytest.mark.parametrize("engine", ENGINES)
def test_psycopg_async_on_the_loop(engine):
    pytest.importorskip("psycopg")
    if engine_skip_reason(engine):
        pytest.skip(engine_skip_reason(engine))
    from ._programs import psycopg_queries

    rows = parallio.loop.run(psycopg_queries(POSTGRES, f"words_{uuid.uuid4().hex[:8]}"), io=engine)
    assert rows == [(number, f"word {number}") for number in range(0, 500, 100)] + [(-1, "ping")]


@needs_postgres
def test_psycopg_async_in_the_workers_auto_picks(caplog):
    pytest.importorskip("psycopg")
    with caplog.at_level(logging.INFO, logger="parallio"):
        results = parallio.loop.run_on_all_cores(
            "tests.loop._programs:psycopg_queries", workers=2, args=(POSTGRES, "words"),
            imports=["psycopg"])
    expected = [(number, f"word {number}") for number in range(0, 500, 100)] + [(-1, "ping")]
    assert results == [expected, expected]
    _host_auto_picks(["psycopg"], caplog)
