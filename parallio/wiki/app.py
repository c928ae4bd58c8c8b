"""The wiki server: PyParallel's instant search over a dictionary, on every
core, from one shared copy of the index.

Routes:

* ``GET /search?q=PREFIX&limit=N``: the first N (1..100, default 10)
  headwords whose folded form starts with PREFIX's, as JSON
  ``{"q", "results": [{"headword", "entries": [[offset, length], ...]}],
  "more"}``; found by binary search over the shared index.
* ``GET /entry/WORD``: every entry of WORD (any case), joined by a blank
  line, as text/plain, sent with ``sendfile_ranged`` from the unpacked text;
  ``Range`` (one range; ``If-Range`` with the ETag) gives 206, nothing
  satisfiable 416. 404 for a word not in the index.
* ``GET /offsets/START/LENGTH``: those bytes of the text (PyParallel's raw
  ranged read); 404 when they are not all inside it.
* ``GET /``: the search page (:mod:`parallio.wiki.page`).
* ``GET /stats``: every worker's counters (this worker's now, the others'
  as their last report, at most a second old), the index's figures and
  :func:`parallio.prometheus_text`.

The main thread calls :meth:`Wiki.prepare` first: it checks the data and
shares the index with :func:`parallio.share`, so every worker of every host
reads one copy (a memfd mapped once per process). Each worker keeps the text
open from its first request, so a rebuild of the data while it serves can
not make it send text the index it holds does not describe.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Optional

import parallio

from ..http.connection import SERVER_HEADER
from ..http.parser import HttpError
from ..http.response import PreparedHeaders, prepare_headers, render_head
from ..http.server import HttpServer
from ..http.static import range_not_satisfiable, requested_range
from .._ref import ObjectRef
from .build import INDEX_NAME, TEXT_NAME
from .index import DEFAULT_LIMIT, Index, IndexFormatError, Match, parse_limit, search_document
from .page import render_page

if TYPE_CHECKING:
    from ..http.parser import Request
    from ..transport import Transport

__all__ = ["Wiki", "ENTRY_SEPARATOR", "entry_pieces", "COUNTER_NAMES", "REPORT_INTERVAL"]

log = logging.getLogger("parallio.wiki")

#: Between two entries of one word in an /entry answer.
ENTRY_SEPARATOR = b"\n"
_TEXT_TYPE = "text/plain; charset=utf-8"
# Digits past this are an offset past any text (and int() of a huge digit
# string is slow).
_MAX_DIGITS = 19

#: What each worker counts, as /stats reports it.
COUNTER_NAMES = ("searches", "entries", "ranges", "offsets", "not_found")

#: Seconds between two reports of a worker's counters to the main thread.
REPORT_INTERVAL = 1.0


# -- counters ---------------------------------------------------------------------------

class _Counters:
    __slots__ = COUNTER_NAMES

    def __init__(self) -> None:
        self.searches = self.entries = self.ranges = self.offsets = self.not_found = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}


# Every worker runs on a thread of its own, in every host.
_local = threading.local()


def _counters() -> _Counters:
    try:
        return _local.counters
    except AttributeError:
        counters = _local.counters = _Counters()
        return counters


def report_counters() -> dict[str, int]:
    """A timer's tick, in each worker: its counters, for the main thread."""
    return {"worker": parallio.thread_seq_id(), **_counters().as_dict()}


#: The main thread's timers that collect report_counters(), one per worker.
_reporters: list[parallio.Timer] = []


def _start_reporters(workers: int) -> None:
    # Timer n ticks in worker (n - 1) % workers + 1: `workers` timers made
    # one after the other land on every worker once.
    _stop_reporters()
    for _ in range(workers):
        _reporters.append(parallio.timer(0, REPORT_INTERVAL, report_counters).start())


def _stop_reporters() -> None:
    while _reporters:
        _reporters.pop().shutdown()


def _reported() -> list[dict[str, int]]:
    """On the main thread: each worker's last report."""
    return [reporter.data for reporter in _reporters if reporter.data is not None]


# -- entries ----------------------------------------------------------------------------

def entry_pieces(entries: tuple[tuple[int, int], ...], first: int,
                 last: int) -> list[Any]:
    """Bytes ``first``..``last`` (inclusive) of the document made of
    ``entries`` (offset, length) of the text joined by
    :data:`ENTRY_SEPARATOR`, as pieces to send in order: ``(offset,
    length)`` of the text, or separator bytes."""
    pieces: list[Any] = []
    position = 0
    for number, (offset, length) in enumerate(entries):
        parts = [(offset, length)] if not number else [ENTRY_SEPARATOR, (offset, length)]
        for part in parts:
            size = len(part) if isinstance(part, bytes) else part[1]
            start, end = max(first, position), min(last + 1, position + size)
            if start < end:
                skip, take = start - position, end - start
                pieces.append(part[skip:skip + take] if isinstance(part, bytes)
                              else (part[0] + skip, take))
            position += size
    return pieces


def _document_size(entries: tuple[tuple[int, int], ...]) -> int:
    return sum(length for _, length in entries) + len(ENTRY_SEPARATOR) * (len(entries) - 1)


def _byte_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise HttpError(404, "Not Found")
    return int(text)


# -- the application --------------------------------------------------------------------

class Wiki:
    """The wiki over the data in ``data_dir`` (made by ``python -m parallio
    wiki build``). Registered like a protocol class and sent to workers by
    value::

        wiki = Wiki("/srv/wiki")
        wiki.prepare(workers=4)               # main thread, before run()
        parallio.register(parallio.server("0.0.0.0", 8080), wiki)
        parallio.run(workers=4)
    """

    def __init__(self, data_dir: str | os.PathLike, *, header_timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None) -> None:
        self.data_dir = os.path.realpath(data_dir)
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._reset()

    def _reset(self) -> None:
        self.index_path = os.path.join(self.data_dir, INDEX_NAME)
        self.text_path = os.path.join(self.data_dir, TEXT_NAME)
        # Short (a memfd's name has at most 249 bytes) and one per data
        # directory; /proc/PID/smaps shows it as /memfd:parallio-wiki-....
        self.share_name = "wiki-" + hashlib.blake2b(self.index_path.encode(),
                                                    digest_size=6).hexdigest()
        self._index: Optional[Index] = None
        self._text: Optional[str] = None
        self._page: Optional[str] = None
        self._protocol: Optional[type] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "header_timeout": self.header_timeout,
                "idle_timeout": self.idle_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __parallio_ref__(self) -> ObjectRef:
        return ObjectRef(f"{__name__}:Wiki", self, by_value=True)

    def __parallio_protocol__(self) -> type:
        if self._protocol is None:
            self._protocol = self.server().protocol_class
        return self._protocol

    # -- the main thread ---------------------------------------------------
    def prepare(self, workers: int) -> Index:
        """Check the data and share the index with every worker of the next
        :func:`parallio.run`, which runs ``workers`` workers (each reports
        its counters for /stats). Main thread, before run().

        Raises:
          FileNotFoundError, IndexFormatError: the data is missing, damaged
            or does not belong together; the message says to rebuild.
        """
        for path in (self.index_path, self.text_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} is missing: build the data first (python -m parallio wiki build "
                    f"--data {self.data_dir})")
        with open(self.index_path, "rb") as file:
            data = file.read()
        index = Index(data)
        text_size = os.path.getsize(self.text_path)
        if text_size != index.text_size:
            raise IndexFormatError(
                f"{self.text_path} has {text_size} bytes but the index was built for "
                f"{index.text_size}: rebuild the data (python -m parallio wiki build)")
        parallio.share(self.share_name, data)
        del data, index  # the share is the one copy now
        _start_reporters(workers)
        return self.index

    def close(self) -> None:
        """Forget the share and stop the counter reports (main thread, after
        run() returned)."""
        _stop_reporters()
        parallio.unshare(self.share_name)
        self._index = None

    # -- every worker ------------------------------------------------------
    @property
    def index(self) -> Index:
        """The shared index (read in place)."""
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = Index(parallio.shared(self.share_name).view)
                index = self._index
        return index

    def _text_path(self) -> str:
        """A path to the text this worker opened first (through /proc, so a
        rebuild that replaced the file changes nothing here)."""
        path = self._text
        if path is None:
            with self._lock:
                if self._text is None:
                    self._text = self._open_text()
                path = self._text
        if not path:
            raise HttpError(503, "the text is missing or changed: restart the server")
        return path

    def _open_text(self) -> str:
        """The /proc path of the text, opened now; "" (said once) when it
        cannot be opened or is not the text the index was built for."""
        try:
            descriptor = os.open(self.text_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.error("wiki: cannot open the text: %s", exc)
            return ""
        size = os.fstat(descriptor).st_size
        if size != self.index.text_size:
            os.close(descriptor)
            log.error("wiki: %s changed since the server started (%d bytes, the index says "
                      "%d): restart it", self.text_path, size, self.index.text_size)
            return ""
        return f"/proc/self/fd/{descriptor}"

    def server(self) -> HttpServer:
        """A new HttpServer with the wiki's routes."""
        server = HttpServer(header_timeout=self.header_timeout, idle_timeout=self.idle_timeout)
        server.route("/")(self.page)
        server.route("/search")(self.search)
        server.route("/entry/{word:path}")(self.entry)
        server.route("/offsets/{start}/{length}")(self.offsets)
        server.route("/stats")(self.stats)
        return server

    # -- the routes --------------------------------------------------------
    def page(self, transport: "Transport", request: "Request") -> str:
        if self._page is None:
            self._page = render_page(html.escape(self.index.title or "parallio wiki"))
        return self._page

    def search(self, transport: "Transport", request: "Request", q: str,
               limit: str = str(DEFAULT_LIMIT)) -> dict[str, Any]:
        try:
            count = parse_limit(limit)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        _counters().searches += 1
        return search_document(self.index, q, count)

    def entry(self, transport: "Transport", request: "Request", word: str) -> None:
        counters = _counters()
        match = self.index.lookup(word)
        if match is None:
            counters.not_found += 1
            raise HttpError(404, "Not Found")
        counters.entries += 1
        self._send_entry(transport, request, match)

    def _send_entry(self, transport: "Transport", request: "Request", match: Match) -> None:
        size = _document_size(match.entries)
        etag = f'"{self.index.build_id:016x}-{match.number:x}"'
        fields = [("Content-Type", _TEXT_TYPE), ("ETag", etag), ("Accept-Ranges", "bytes")]
        status, first, last = 200, 0, size - 1
        ranges = requested_range(request, size, etag.__eq__)
        if ranges is not None:
            if not ranges:
                transport.send(range_not_satisfiable(request, size, [("ETag", etag)]))
                return
            (first, last), = ranges
            status = 206
            fields.append(("Content-Range", f"bytes {first}-{last}/{size}"))
            _counters().ranges += 1
        head = render_head(status, PreparedHeaders(SERVER_HEADER + prepare_headers(fields)),
                           content_length=last - first + 1, keep_alive=request.keep_alive,
                           request_version=request.http_version)
        if request.method == "HEAD":
            transport.send(head)
            return
        self._send_pieces(transport, head, entry_pieces(match.entries, first, last))

    def _send_pieces(self, transport: "Transport", head: bytes, pieces: list[Any]) -> None:
        path = self._text_path()
        pending = [head]
        started = False
        for piece in pieces:
            if isinstance(piece, bytes):
                pending.append(piece)
                continue
            try:
                transport.sendfile_ranged(b"".join(pending), path, None, *piece)
            except OSError:
                log.exception("wiki: cannot send from %s", self.text_path)
                if started:
                    transport.abort()  # part of the answer is out: only a cut tells
                    return
                raise HttpError(503, "the text cannot be read") from None
            started = True
            pending = []
        if pending:
            transport.send(b"".join(pending))

    def offsets(self, transport: "Transport", request: "Request", start: str,
                length: str) -> None:
        offset, size = _byte_count(start), _byte_count(length)
        if offset + size > self.index.text_size:
            _counters().not_found += 1
            raise HttpError(404, "Not Found")
        _counters().offsets += 1
        head = render_head(200, PreparedHeaders(SERVER_HEADER + prepare_headers(
            [("Content-Type", _TEXT_TYPE)])), content_length=size,
            keep_alive=request.keep_alive, request_version=request.http_version)
        if request.method == "HEAD" or not size:
            transport.send(head)
            return
        self._send_pieces(transport, head, [(offset, size)])

    def stats(self, transport: "Transport", request: "Request") -> dict[str, Any]:
        mine = report_counters()
        reported = parallio.call_from_main_thread_and_wait(_reported, ())
        workers = sorted([report for report in reported if report["worker"] != mine["worker"]]
                         + [mine], key=lambda report: report["worker"])
        index = self.index
        return {
            "worker": mine["worker"],
            "workers": workers,
            "totals": {name: sum(report[name] for report in workers) for name in COUNTER_NAMES},
            "index": {"title": index.title, "headwords": index.keys, "entries": index.entries,
                      "index_bytes": index.nbytes, "text_bytes": index.text_size},
            "prometheus": parallio.prometheus_text(),
        }
