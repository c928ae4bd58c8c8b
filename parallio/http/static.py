"""Static files for :class:`~parallio.http.server.HttpServer`.

:class:`StaticFiles` serves a directory tree with ``GET`` and ``HEAD``:

* Files go out with sendfile (zero-copy, any size: no 2 GB limit), with
  ``Content-Type`` from the extension, ``Last-Modified``, ``ETag`` (from
  mtime_ns, size and inode) and ``Accept-Ranges: bytes``.
* ``If-None-Match`` (weak comparison, ``*``) and, without it,
  ``If-Modified-Since`` give 304.
* ``Range`` (GET only, RFC 9110 §14.2): one satisfiable byte range gives 206
  with ``Content-Range``; ranges that overlap or touch are merged first.
  None satisfiable gives 416 with ``Content-Range: bytes */size``. Several
  disjoint ranges are refused by ignoring the header (the RFC's "MAY
  ignore"): the whole file, 200. So is a malformed header, one listing
  more than :data:`MAX_RANGES` ranges, or one with a number of more than 40
  significant digits (leading zeros do not count). ``If-Range`` that does
  not match (strongly) also means the whole file.
* A directory: without its trailing slash, 301 to the slashed path; with
  it, its first index file (``index.html``, ``index.htm``), else a listing if
  enabled, else 403.

No request reaches a file outside the root. The path is percent-decoded
exactly once; a NUL byte is a 400; a ``..`` segment is a 404; the decoded
path is resolved with :func:`os.path.realpath` (every symlink, wherever it
sits) and must lie inside the real root, else 404. Only regular files are
sent (a FIFO or device inside the root is a 404: opening one could block
the worker).
"""

from __future__ import annotations

import datetime
import email.utils
import html
import mimetypes
import os
import stat
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence
from urllib.parse import quote, unquote_to_bytes

from .parser import HttpError, Request
from .response import SERVER_HEADER, HeaderPairs, render_head, server_headers, simple_response

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["StaticFiles", "parse_byte_ranges", "requested_range", "range_not_satisfiable",
           "content_type", "MAX_RANGES"]

#: A Range header with more range specs than this is ignored (whole file).
MAX_RANGES = 16
# A byte position has at most 19 digits (st_size < 2**63). A number of more
# significant digits than this is no position at all, so it is refused by its
# length, before int(): converting a huge digit string is slow, and refused
# past sys.get_int_max_str_digits().
_MAX_SIGNIFICANT_DIGITS = 40

# The standard library's built-in table only: a machine's /etc/mime.types
# must not change what the server answers.
_TYPES = mimetypes.MimeTypes(filenames=())
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                  "xz": "application/x-xz", "br": "application/x-brotli"}
_type_cache: dict[str, str] = {}


def content_type(name: str) -> str:
    """The Content-Type for a file called ``name``."""
    extension = os.path.splitext(name)[1].lower()
    if extension in _type_cache:
        return _type_cache[extension]
    guessed, encoding = _TYPES.guess_type("x" + extension if extension else name, strict=False)
    if encoding is not None:
        # foo.tar.gz is a gzip file to the client: no Content-Encoding is sent.
        guessed = _ENCODED_TYPES.get(encoding, "application/octet-stream")
    elif guessed is None:
        guessed = "application/octet-stream"
    elif guessed.startswith("text/") or guessed in ("application/javascript", "application/json"):
        guessed += "; charset=utf-8"
    if len(_type_cache) < 512:
        _type_cache[extension] = guessed
    return guessed


def _number(digits: str) -> Optional[int]:
    """1*DIGIT as its exact value, or None."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    significant = digits.lstrip("0")
    if len(significant) > _MAX_SIGNIFICANT_DIGITS:
        return None
    return int(significant) if significant else 0


def parse_byte_ranges(value: str, size: int) -> Optional[list[tuple[int, int]]]:
    """The satisfiable ranges of Range header ``value`` for ``size`` bytes,
    as merged, sorted ``(first, last)`` pairs (inclusive).

    None: the header is to be ignored (not ``bytes``, malformed, more than
    :data:`MAX_RANGES` specs, or a number of more than 40 significant
    digits). An empty list: nothing is satisfiable
    (416).
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return None
    elements = specs.split(",")
    if len(elements) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    seen = 0
    for element in elements:
        element = element.strip(" \t")
        if not element:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        seen += 1
        first_text, dash, last_text = element.partition("-")
        if not dash:
            return None
        if first_text:
            first = _number(first_text)
            if first is None:
                return None
            if last_text:
                last = _number(last_text)
                if last is None or last < first:
                    return None
            else:
                last = size - 1
            if first < size:
                ranges.append((first, min(last, size - 1)))
        else:
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix and size:
                ranges.append((max(0, size - suffix), size - 1))
    if not seen:
        return None
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def requested_range(request: Request, size: int,
                    if_range_matches: Callable[[str], bool]) -> Optional[list[tuple[int, int]]]:
    """The byte range ``request`` asks of a ``size``-byte representation,
    by the rules of this module's docstring: None to send it whole (no
    Range, not a GET, an If-Range that ``if_range_matches`` refuses, a
    header to ignore), an empty list when nothing asked is satisfiable
    (416, see :func:`range_not_satisfiable`), else ``[(first, last)]``."""
    header = request.headers.get("range")
    if header is None or request.method != "GET":
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and not if_range_matches(if_range.strip(" \t")):
        return None
    ranges = parse_byte_ranges(header, size)
    return ranges if ranges is not None and len(ranges) <= 1 else None


def range_not_satisfiable(request: Request, size: int, fields: HeaderPairs = ()) -> bytes:
    """The 416 answer to ``request`` for a ``size``-byte representation,
    with ``fields`` (its validators) besides Content-Range."""
    return simple_response(
        416, b"Range Not Satisfiable\n", keep_alive=request.keep_alive,
        extra_headers=server_headers([("Content-Range", f"bytes */{size}"), *fields]),
        request_version=request.http_version)


def _etag_listed(header: str, etag: str) -> bool:
    """Weak comparison of ``etag`` with an If-None-Match list."""
    if header.strip(" \t") == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip(" \t")
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _http_time(value: str) -> Optional[float]:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # "-0000" parses as naive; HTTP dates are always GMT.
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


class StaticFiles:
    """Serves the files under ``root`` at the URL ``prefix`` (a prefix
    route of an HttpServer; see :meth:`HttpServer.static
    <parallio.http.server.HttpServer.static>` and the module docstring).

    Raises :class:`NotADirectoryError` if ``root`` is not a directory.
    """

    def __init__(self, root: str | os.PathLike, prefix: str = "/", *, listing: bool = False,
                 index: Sequence[str] = ("index.html", "index.htm")) -> None:
        real = os.path.realpath(os.fsencode(root))
        if not os.path.isdir(real):
            raise NotADirectoryError(f"{os.fsdecode(root)!r} is not a directory")
        if not prefix.startswith("/"):
            raise ValueError(f"a mount prefix starts with '/': {prefix!r}")
        self.root = real
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._prefix_bytes = self.prefix.encode()
        self.listing = listing
        self.index = [os.fsencode(name) for name in index]
        for name in self.index:
            if b"/" in name or name in (b"", b".", b".."):
                raise ValueError(f"an index file is a plain name, not {name!r}")

    def __call__(self, transport: "Transport", request: Request) -> None:
        # Decoded once, to bytes: names on disk need not be UTF-8.
        raw = unquote_to_bytes(request.raw_path)
        if b"\0" in raw:
            raise HttpError(400, "NUL byte in path")
        prefix = self._prefix_bytes
        if raw == prefix[:-1]:
            return self._redirect_to_directory(transport, request)
        if not raw.startswith(prefix):
            raise HttpError(404, "Not Found")
        parts = []
        for segment in raw[len(prefix):].split(b"/"):
            if segment == b"..":
                raise HttpError(404, "Not Found")
            if segment and segment != b".":
                parts.append(segment)
        path = self._inside(os.path.join(self.root, *parts))
        try:
            info = os.stat(path)
        except PermissionError:
            raise HttpError(403, "Forbidden") from None
        except OSError:
            raise HttpError(404, "Not Found") from None
        if stat.S_ISDIR(info.st_mode):
            if not raw.endswith(b"/"):
                return self._redirect_to_directory(transport, request)
            for name in self.index:
                try:
                    index_path = self._inside(os.path.join(path, name))
                    index_info = os.stat(index_path)
                except (HttpError, OSError):
                    continue
                if stat.S_ISREG(index_info.st_mode):
                    return self._send_file(transport, request, index_path, index_info, name)
            if self.listing:
                return self._send_listing(transport, request, path)
            raise HttpError(403, "Forbidden")
        if not stat.S_ISREG(info.st_mode) or raw.endswith(b"/"):
            raise HttpError(404, "Not Found")
        return self._send_file(transport, request, path, info, parts[-1] if parts else b"")

    def _inside(self, path: bytes) -> bytes:
        """``path`` with every symlink resolved, if that lies in the root."""
        real = os.path.realpath(path)
        root = self.root
        if real != root and not real.startswith(root if root.endswith(b"/") else root + b"/"):
            raise HttpError(404, "Not Found")
        return real

    def _redirect_to_directory(self, transport: "Transport", request: Request) -> None:
        # raw_path is what the client sent (VCHARs only: the parser checked),
        # so it is safe in a header and keeps the client's own encoding.
        location = request.raw_path + "/"
        if request.query:
            location += "?" + request.query
        transport.send(simple_response(
            301, b"Moved Permanently\n", keep_alive=request.keep_alive,
            extra_headers=server_headers([("Location", location)]),
            request_version=request.http_version, head_only=request.method == "HEAD"))

    def _send_file(self, transport: "Transport", request: Request, path: bytes,
                   info: os.stat_result, name: bytes) -> None:
        """Send the regular file at ``path``; its type comes from ``name``,
        the name requested (a symlink's target may be named otherwise)."""
        size = info.st_size
        etag = '"%x-%x-%x"' % (info.st_mtime_ns, size, info.st_ino)
        last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        validators = [("Last-Modified", last_modified), ("ETag", etag)]
        headers = request.headers
        if self._not_modified(headers.get("if-none-match"), headers.get("if-modified-since"),
                              etag, info.st_mtime):
            transport.send(render_head(
                304, server_headers(validators),
                keep_alive=request.keep_alive, request_version=request.http_version))
            return
        fields = [("Content-Type", content_type(os.fsdecode(name))), *validators,
                  ("Accept-Ranges", "bytes")]
        status, offset, length = 200, 0, size
        ranges = requested_range(request, size, lambda if_range: self._if_range_matches(
            if_range, etag, last_modified))
        if ranges is not None:
            if not ranges:
                transport.send(range_not_satisfiable(request, size, validators))
                return
            (first, last), = ranges
            status, offset, length = 206, first, last - first + 1
            fields.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        head = render_head(status, server_headers(fields),
                           content_length=length, keep_alive=request.keep_alive,
                           request_version=request.http_version)
        if request.method == "HEAD" or not length:
            transport.send(head)
            return
        try:
            # sendfile_ranged rather than sendfile: exactly the length the
            # head announces goes out, even if the file grows meanwhile (and
            # the connection is cut if it shrinks).
            transport.sendfile_ranged(head, path, None, offset, length)
        except PermissionError:
            raise HttpError(403, "Forbidden") from None
        except FileNotFoundError:
            raise HttpError(404, "Not Found") from None
        except ValueError:
            raise HttpError(503, "the file changed while being served; try again") from None

    @staticmethod
    def _not_modified(if_none_match: Optional[str], if_modified_since: Optional[str],
                      etag: str, mtime: float) -> bool:
        if if_none_match is not None:
            # RFC 9110 §13.1.3: If-Modified-Since is ignored when this is present.
            return _etag_listed(if_none_match, etag)
        if if_modified_since is not None:
            since = _http_time(if_modified_since)
            # A date in the future is invalid (§13.1.3): ignored.
            if since is not None and since <= time.time():
                return int(mtime) <= since
        return False

    @staticmethod
    def _if_range_matches(if_range: str, etag: str, last_modified: str) -> bool:
        if if_range.startswith('"') or if_range.startswith("W/"):
            return if_range == etag  # strong comparison: a weak tag never matches
        return if_range == last_modified

    def _send_listing(self, transport: "Transport", request: Request, path: bytes) -> None:
        try:
            with os.scandir(path) as entries:
                names = []
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    names.append((entry.name, is_dir))
        except OSError:
            raise HttpError(403, "Forbidden") from None
        names.sort(key=lambda item: item[0].lower())
        title = html.escape(request.path, quote=False)
        rows = []
        for name, is_dir in names:
            slash = b"/" if is_dir else b""
            href = html.escape(quote(name + slash))
            shown = html.escape(name.decode("utf-8", "replace") + ("/" if is_dir else ""),
                                quote=False)
            rows.append(f'<li><a href="{href}">{shown}</a></li>\n')
        body = (f"<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>Directory listing for {title}</title>\n</head>\n<body>\n"
                f"<h1>Directory listing for {title}</h1>\n<hr>\n<ul>\n{''.join(rows)}</ul>\n"
                f"<hr>\n</body>\n</html>\n").encode()
        transport.send(simple_response(
            200, body, b"text/html; charset=utf-8", request.keep_alive, SERVER_HEADER,
            request_version=request.http_version, head_only=request.method == "HEAD"))
