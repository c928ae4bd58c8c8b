"""The asyncio peer's code, unchanged, on parallio's event loop.

    python -m parallio.bench.peers.on_parallio_loop --io uring --port P [--static DIR]
    python -m parallio.bench.peers.on_parallio_loop --workers 2 --parallel interpreters ...

With one worker (the default) this runs ``asyncio_http.py`` itself, as a
script, with parallio's loop installed as asyncio's: the same code the
``asyncio`` and ``uvloop`` contenders run, on a third loop. With more, each
worker of :func:`parallio.loop.run_on_all_cores` serves the peer's
``HttpProtocol`` on its own ``SO_REUSEPORT`` socket (the peer's own
``serve()`` installs signal handlers, which only a main thread may do; the
runtime handles the signals here).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

PEER_SCRIPT = Path(__file__).resolve().parent / "asyncio_http.py"
_peer: ModuleType | None = None


def peer() -> ModuleType:
    """The peer's module, loaded by path as the peer loads ``apps.py``."""
    global _peer
    if _peer is None:
        spec = importlib.util.spec_from_file_location("bench_asyncio_http", PEER_SCRIPT)
        assert spec is not None and spec.loader is not None
        _peer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_peer)
    return _peer


async def serve(host: str, port: int, static: str | None) -> None:
    """One worker: the peer's protocol on its own listening socket."""
    code = peer()
    loop = asyncio.get_running_loop()
    code._refresh_date(loop)
    files = code.list_files(static)
    server = await loop.create_server(lambda: code.HttpProtocol(files), host, port,
                                      reuse_port=True, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--static", metavar="DIR")
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--parallel", default="auto",
                        choices=["auto", "threads", "interpreters", "processes"])
    args = parser.parse_args(argv)
    import parallio.loop

    if args.workers == 1:
        io = args.io

        class Policy(parallio.loop.EventLoopPolicy):
            def _loop_factory(self) -> parallio.loop.EventLoop:
                return parallio.loop.new_event_loop(io)

        asyncio.set_event_loop_policy(Policy())
        sys.argv = [str(PEER_SCRIPT), "--host", args.host, "--port", str(args.port)]
        if args.static:
            sys.argv += ["--static", args.static]
        runpy.run_path(str(PEER_SCRIPT), run_name="__main__")
        return
    parallio.loop.run_on_all_cores(serve, workers=args.workers, parallel=args.parallel,
                                   io=args.io, args=(args.host, args.port, args.static),
                                   drain_timeout=1.0)


if __name__ == "__main__":
    main()
