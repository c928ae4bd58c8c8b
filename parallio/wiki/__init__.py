"""PyParallel's instant search, rebuilt on a real corpus: a dictionary's
headwords in one index shared by every worker, searched by prefix as you
type, entries sent straight from the text with ranged sendfile.

``python -m parallio wiki build --data DIR`` makes the data (from Debian's
``dict-gcide`` or any dictd database), ``python -m parallio wiki --data DIR``
serves it. :mod:`.index` is the index format and its search (sans-I/O),
:mod:`.dictd` reads dictd databases, :mod:`.build` makes the data,
:mod:`.app` is the server, :mod:`.bench` measures it.
"""

from .index import Index, IndexFormatError, Match, Record, SearchResult, build_index, fold

__all__ = ["Index", "IndexFormatError", "Match", "Record", "SearchResult", "build_index", "fold"]
