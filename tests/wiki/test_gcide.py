"""The wiki over the real corpus, Debian's dict-gcide (skipped without it)."""

from __future__ import annotations

import json
import random
from urllib.parse import quote

from parallio.wiki.app import Wiki
from parallio.wiki.build import INDEX_NAME, TEXT_NAME
from parallio.wiki.index import Index

from .._http_client import Client, address_of
from ..conftest import serving


def test_gcide_index(gcide_data):
    index = Index((gcide_data / INDEX_NAME).read_bytes())
    text = (gcide_data / TEXT_NAME).read_bytes()
    assert index.title.startswith("The Collaborative International Dictionary of English")
    assert index.keys > 150_000 and index.entries > index.keys
    assert index.text_size == len(text) > 30_000_000
    # Every entry of a word starts with that word, as the dictionary writes it.
    dilute = index.lookup("DILUTE")
    assert len(dilute.entries) == 3
    for offset, length in dilute.entries:
        assert text[offset:offset + length].startswith(b'Dilute \\Di*lute"\\')
    rng = random.Random(13)
    for number in rng.sample(range(index.keys), 300):
        match = index.match(number)
        assert index.lookup(match.headword) == match
        assert index.search(match.headword, 1).matches == [match]


def test_gcide_served(gcide_data):
    wiki = Wiki(gcide_data)
    wiki.prepare(workers=2)
    try:
        with serving(wiki, ("processes", "epoll"), workers=2) as runtime:
            with Client(address_of(runtime)) as client:
                found = json.loads(client.get("/search?q=dilu&limit=5").body)
                assert [r["headword"] for r in found["results"]] == [
                    "Dilucid", "Dilucidate", "Dilucidation", "Dilucidity", "Dilucidly"]
                assert found["more"]
                entry = client.get("/entry/" + quote("dilute"))
                assert entry.status == 200 and entry.body.count(b'Dilute \\Di*lute"\\') == 3
                part = client.get("/entry/dilute", [("Range", "bytes=-20")])
                assert (part.status, part.body) == (206, entry.body[-20:])
    finally:
        wiki.close()
