"""The data rebuilt while the wiki serves: each worker keeps the text it
opened first, so an index and a text that do not belong together are never
served as one."""

from __future__ import annotations

import io

from parallio.wiki.app import Wiki
from parallio.wiki.build import TEXT_NAME, Progress, build

from .._http_client import Client, address_of
from ..conftest import serving
from .dictd_files import SAMPLE, write_dictd


def get(address, target: str):
    with Client(address) as client:
        return client.get(target)


def test_a_rebuild_while_serving_never_mixes_index_and_text(tmp_path):
    """A worker that would open a text its index does not describe answers
    503 instead."""
    index_path, text_path = write_dictd(tmp_path / "sample")
    data = tmp_path / "data"
    build(str(index_path), str(text_path), str(data), Progress(io.StringIO()))
    longer = [(headwords, body.replace("n.", "noun.")) for headwords, body in SAMPLE]
    new_index, new_text = write_dictd(tmp_path / "longer", longer)
    served = Wiki(data)
    served.prepare(workers=1)
    try:
        with serving(served, ("threads", "epoll")) as runtime:
            address = address_of(runtime)
            before = get(address, "/entry/apple")
            assert before.status == 200
            build(str(new_index), str(new_text), str(data), Progress(io.StringIO()))
            after = get(address, "/entry/apple")
            assert (after.status, after.body) == (200, before.body)
    finally:
        served.close()
    stale = Wiki(data)
    stale.prepare(workers=1)  # the new index and text ...
    try:
        with serving(stale, ("threads", "epoll")) as runtime:
            # ... and, before any worker opened it, a text of another size.
            (data / TEXT_NAME).write_bytes(b"x" * 10)
            reply = get(address_of(runtime), "/entry/apple")
            assert reply.status == 503
            assert b"restart the server" in reply.body
            assert get(address_of(runtime), "/search?q=ap").status == 200
    finally:
        stale.close()
