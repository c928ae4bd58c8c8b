"""Coroutine functions that parallio workers import by name (the
interpreters and processes hosts load them from here)."""

from __future__ import annotations

import asyncio
import os
import sys

from parallio.worker import current_worker


async def where_am_i() -> tuple[str, str, int]:
    """The running loop's class, its engine and the worker's number."""
    loop = asyncio.get_running_loop()
    worker = current_worker()
    return type(loop).__name__, loop.engine.name, worker.seq_id if worker else 0  # type: ignore[attr-defined]


async def second_worker_fails() -> None:
    worker = current_worker()
    if worker is not None and worker.seq_id == 2:
        raise ValueError("worker 2 gave up")
    await asyncio.sleep(60)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def serve_echo() -> None:
    """An echo server on $PARALLIO_TEST_PORT, shared by every worker; it
    says it serves on stderr once listening."""
    port = int(os.environ["PARALLIO_TEST_PORT"])
    server = await asyncio.start_server(_echo, "127.0.0.1", port, reuse_port=True)
    # One write per line: print() writes the text and its newline apart, and
    # two workers on threads would interleave them.
    sys.stderr.write(f"worker {current_worker().seq_id} serving\n")  # type: ignore[union-attr]
    sys.stderr.flush()
    async with server:
        await server.serve_forever()


async def aiohttp_round_trips(requests: int) -> list[str]:
    """aiohttp's server and its client, both on this worker's loop."""
    from aiohttp import ClientSession, web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.match_info['name']}")

    async def upper(request: web.Request) -> web.Response:
        return web.Response(body=(await request.read()).upper())

    app = web.Application()
    app.add_routes([web.get("/hello/{name}", hello), web.post("/upper", upper)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    replies = []
    try:
        async with ClientSession() as session:
            for number in range(requests):
                async with session.get(f"http://127.0.0.1:{port}/hello/{number}") as response:
                    replies.append(await response.text())
            async with session.post(f"http://127.0.0.1:{port}/upper",
                                    data=b"streamed " * 20_000) as response:
                body = await response.read()
                replies.append(f"{response.status} {len(body)} {body[:9].decode()}")
    finally:
        await runner.cleanup()
    return replies


async def psycopg_queries(dsn: str, table: str) -> list[tuple[int, str]]:
    """psycopg's async mode (add_reader/add_writer on the loop): a
    transaction, a prepared insert of many rows, LISTEN/NOTIFY."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        await connection.execute(f"CREATE TEMPORARY TABLE {table} (id int, word text)")
        async with connection.transaction():
            async with connection.cursor() as cursor:
                await cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)",
                                         [(number, f"word {number}") for number in range(500)])
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
            await listener.execute("LISTEN parallio_loop")
            await connection.execute("NOTIFY parallio_loop, 'ping'")
            async for notify in listener.notifies(timeout=10, stop_after=1):
                payload = notify.payload
        cursor = await connection.execute(
            f"SELECT id, word FROM {table} WHERE id % 100 = 0 ORDER BY id")
        rows = [(row[0], row[1]) for row in await cursor.fetchall()]
        return rows + [(-1, payload)]
