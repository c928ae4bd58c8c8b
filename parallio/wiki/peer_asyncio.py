"""The wiki's ``/search`` on plain asyncio, the benchmark's peer: the
benchmark suite's asyncio HTTP server (:mod:`parallio.bench.peers.asyncio_http`,
an ``asyncio.Protocol`` written for speed) with the wiki's search as one more
route, over the same index format, mapped from the file::

    python parallio/wiki/peer_asyncio.py --data DIR --port P [--workers N]

Run as a script, like the suite's peer: it loads that server and the index
module by file path, so it imports no parallio runtime.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import mmap
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from urllib.parse import parse_qs

_HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


server = _load("bench_asyncio_http", _HERE.parent / "bench" / "peers" / "asyncio_http.py")
index_module = _load("wiki_index", _HERE / "index.py")
INDEX_NAME = "headwords.index"  # parallio.wiki.build.INDEX_NAME (checked by the tests)


def search_route(index: Any) -> Callable[[bytes], tuple[int, bytes, bytes]]:
    def search(query: bytes) -> tuple[int, bytes, bytes]:
        fields = parse_qs(query.decode("latin-1"), keep_blank_values=True, errors="replace",
                          encoding="utf-8")
        prefix = fields.get("q", [None])[0]
        if prefix is None:
            return 400, b"text/plain", b"400 missing query parameter 'q'\n"
        try:
            limit = index_module.parse_limit(
                fields.get("limit", [str(index_module.DEFAULT_LIMIT)])[0])
        except ValueError as exc:
            return 400, b"text/plain", f"400 {exc}\n".encode()
        document = index_module.search_document(index, prefix, limit)
        return 200, b"application/json", json.dumps(document).encode()

    return search


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, metavar="DIR")
    args, rest = parser.parse_known_args(argv)
    with open(os.path.join(args.data, INDEX_NAME), "rb") as file:
        index = index_module.Index(mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ))
    server.ROUTES[b"/search"] = search_route(index)
    # The peer is loaded from its path, so its globals are unknown to type checkers.
    setattr(server, "SERVER_NAME", b"asyncio")
    server.main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
