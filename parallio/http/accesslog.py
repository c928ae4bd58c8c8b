"""Access logs: one line per HTTP response, in gunicorn's format language or
as JSON, written by each worker off the request path.

Every HTTP front (the ``http11`` fast path, :class:`HttpServer` and its
static files, WSGI, ASGI) reports each response it finishes to its worker's
:class:`AccessLog`. Recording one keeps the few values the line needs (no
formatting, no system call); lines are rendered in batches and written with
one ``write(2)`` per batch: when the batch is full, at most a second after
its first entry, and when the worker's last HTTP connection closes (so a
stopping worker leaves nothing unwritten). Each worker opens the log itself
(``O_APPEND``: whole batches of lines never interleave in a file); on a pipe
(``-`` is standard output) batches are cut at line ends below ``PIPE_BUF``,
so workers' lines do not interleave there either.

Formats, by :func:`compile_format`:

* gunicorn's ``%(atom)s`` language (``COMMON``, ``COMBINED``, the default
  ``GUNICORN``, or your own): ``h`` remote address, ``l`` ``-``, ``u`` user
  name (HTTP Basic), ``t`` time of the request (``[01/Dec/2026:07:25:40
  +0000]``), ``r`` request line, ``m`` method, ``U`` path, ``q`` query
  string, ``H`` protocol, ``s`` status, ``B`` body bytes, ``b`` body bytes
  or ``-``, ``f`` referer, ``a`` user agent, ``T`` / ``M`` / ``D`` / ``L``
  the response time in seconds / milliseconds / microseconds / decimal
  seconds, ``p`` process id, ``w`` worker number (parallio's), and
  ``{name}i`` a request header, ``{name}e`` an environment variable.
  Request values are escaped as nginx does (``"``, ``\\`` and bytes
  outside printable ASCII as ``\\xHH``), so a line cannot be forged.
* ``json``: one object per line with ``time`` (ISO 8601), ``remote``,
  ``method``, ``target``, ``protocol``, ``status``, ``bytes``,
  ``duration_ms``, ``referer``, ``user_agent``, ``worker`` and ``pid``.

A response whose status the server did not produce (a handler that sent its
own bytes and returned None) is logged with status ``-``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import select
import stat
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._control import write_all
from ..runtime import Runtime, _runtime_hooks
from ..worker import current_worker

if TYPE_CHECKING:
    from ..transport import ProtocolLoop
    from .parser import Headers, Request

__all__ = ["AccessLogConfig", "AccessLog", "compile_format", "configure", "configured",
           "COMMON", "COMBINED", "GUNICORN", "JSON", "EXTRAS_KEY", "WorkerAccessLog"]

#: Apache's Common Log Format.
COMMON = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
#: Apache's Combined Log Format: COMMON with referer and user agent.
COMBINED = COMMON + ' "%(f)s" "%(a)s"'
#: gunicorn's default, which is COMBINED.
GUNICORN = COMBINED
#: The name of the JSON lines format.
JSON = "json"

#: A batch is rendered and written once it holds this many entries...
BATCH = 256
#: ...or this many seconds after its first entry.
FLUSH_INTERVAL = 1.0
_PIPE_BUF = select.PIPE_BUF

# A literal %%, or an atom %(name)s.
_ATOM_S = re.compile(r"%%|%\(([^)]*)\)s")
# What cannot appear in a quoted log field as it is (nginx's escaping).
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _escape(text: str) -> str:
    # The common case, by string methods (faster than the expression).
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _UNSAFE.sub(lambda match: "".join(f"\\x{byte:02x}" for byte in
                                             match.group().encode("utf-8", "surrogateescape")),
                       text)


@dataclass(frozen=True)
class AccessLogConfig:
    """Where the access log goes (a path, or ``-`` for standard output) and
    its format (gunicorn's ``%(atom)s`` language, or ``json``)."""

    path: str = "-"
    format: str = GUNICORN

    def __post_init__(self) -> None:
        compile_format(self.format)  # a bad format fails where it was given


# -- one entry ----------------------------------------------------------------

#: What a response leaves for its line: the peer, the request's method,
#: target, version and headers (None fields for a request that never
#: parsed), status (0: unknown), body bytes, start (time.time()) and seconds.
Entry = tuple[Any, Optional[str], Optional[str], Optional[tuple[int, int]], Optional["Headers"],
              int, int, float, float]


class _Clock:
    """``[day/Mon/year:H:M:S +zone]`` and ISO 8601 stamps, made once per
    second."""

    def __init__(self) -> None:
        self.second = -1
        self.clf = ""
        self.iso = ""

    def at(self, when: float) -> None:
        second = int(when)
        if second != self.second:
            self.second = second
            local = time.localtime(second)
            zone = time.strftime("%z", local)
            self.clf = (f"[{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:"
                        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} {zone}]")
            self.iso = (time.strftime("%Y-%m-%dT%H:%M:%S", local) + ".%03d"
                        + zone[:3] + ":" + zone[3:])


def needles(names: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """What :func:`fields_of` looks for: each name, and its line start."""
    return tuple((name, b"\n" + name.lower().encode("ascii") + b":") for name in names)


def fields_of(headers: Optional["Headers"],
              wanted: tuple[tuple[str, bytes], ...]) -> list[Optional[str]]:
    """The first value of each field ``wanted`` (see :func:`needles`), None
    where absent. Where the handler left the request's fields unsplit, they
    are found in the raw field section, which is all a log line needs:
    splitting every field of every request would cost more than the rest of
    the line."""
    if headers is None:
        return [None] * len(wanted)
    # parser.Headers keeps the section, as received, until its fields are
    # first read; once they were (or without it), they are asked.
    section = getattr(headers, "_section", None)
    if not section or section.__class__ is not bytes:
        return [headers.get(name) for name, _needle in wanted]
    lowered = section.lower()  # the same length: positions carry over
    values: list[Optional[str]] = []
    for _name, needle in wanted:
        # A field after the first starts a line; the first starts the section.
        at = lowered.find(needle) + 1
        if not at and not lowered.startswith(needle[1:]):
            values.append(None)
        else:
            values.append(_cut(section, at + len(needle) - 1))
    return values


def _user(value: Optional[str]) -> str:
    """The user name of an Authorization: Basic value."""
    if not value or value[:6].lower() != "basic ":
        return "-"
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return "-"
    return _escape(decoded.partition(":")[0]) or "-"


_VERSIONS = {(1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}


def _protocol(version: Optional[tuple[int, int]]) -> str:
    if version is None:
        return "-"
    return _VERSIONS.get(version) or f"HTTP/{version[0]}.{version[1]}"


def _target_part(target: Optional[str], query: bool) -> str:
    if target is None:
        return "-"
    path, _, rest = target.partition("?")
    return _escape(rest if query else path)


# A request field's value as it goes into the line: "-" when absent, as it
# is when it is printable ASCII without a quote or backslash (the common case,
# checked inline), else escaped.
_FIELD = ('("-" if {0} is None else {0} if {0}.isascii() and {0}.isprintable() '
          'and \'"\' not in {0} and "\\\\" not in {0} else _escape({0}))')

#: Each atom as the expressions it formats, over the entry's fields (see
#: Entry), for the compiled renderer; {name} stands for the value of the
#: request field ``name``. ``r`` is three: with no request, its line is a
#: format of its own (see :func:`_render_function`).
_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "h": ('(peer[0] if peer.__class__ is tuple else "-")',),
    "l": ('"-"',),
    "u": ('("-" if {authorization} is None else _user({authorization}))',),
    "t": ("clock.clf",),
    # The parser lets only printable ASCII into a target: only a quote or a
    # backslash needs escaping there.
    "r": ("method", '(_escape(target) if \'"\' in target or "\\\\" in target else target)',
          "(VERSIONS.get(version) or _protocol(version))"),
    "m": ('(method or "-")',),
    "U": ("_target_part(target, False)",),
    "q": ("_target_part(target, True)",),
    "H": ("_protocol(version)",),
    "s": ('(status or "-")',),
    "B": ("sent",),
    "b": ('(sent or "-")',),
    "f": (_FIELD.format("{referer}"),),
    "a": (_FIELD.format("{user-agent}"),),
    "T": ("int(seconds)",),
    "M": ("int(seconds * 1000)",),
    "D": ("int(seconds * 1000000)",),
    "L": ('f"{{seconds:.6f}}"',),
    "p": ("PID",),
    "w": ("WORKER",),
}

Renderer = Callable[[Entry], str]


def compile_format(text: str, worker: int = 0, pid: int = 0) -> Renderer:
    """A function making one line (without its newline) from an entry, for
    the format ``text``; ValueError naming an atom it does not know.

    The format becomes one ``%`` operation over a tuple of expressions, one
    per atom (an ``exec``, as :mod:`dataclasses` does): no lookup per atom
    per line."""
    clock = _Clock()
    if text.strip().lower() == JSON:
        return _json_renderer(clock, worker, pid)
    expressions: list[str] = []
    request_lines: list[int] = []  # where each %(r)s's three expressions start

    def atom(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%%"
        if name == "r":
            request_lines.append(len(expressions))
        if name in _EXPRESSIONS:
            expressions.extend(_EXPRESSIONS[name])
            return " ".join(["%s"] * len(_EXPRESSIONS[name]))
        elif name.startswith("{") and name.endswith("}i") and len(name) > 3:
            expressions.append(_FIELD.format("{" + name[1:-2].lower() + "}"))
        elif name.startswith("{") and name.endswith("}e") and len(name) > 3:
            expressions.append(repr(_escape(os.environ.get(name[1:-2], "-"))).replace("{", "{{")
                               .replace("}", "}}"))
        elif name.startswith("{") and name.endswith("}o"):
            raise ValueError(f"access log format: %({name})s: response headers are not "
                             "available to the access log")
        else:
            raise ValueError(f"access log format: unknown atom %({name})s")
        return "%s"

    # Every %(atom)s becomes %s; a stray % is refused by the probe below.
    positional = _ATOM_S.sub(atom, text)
    # An entry without a request (a refusal) shows "-" for its request line.
    no_request = _ATOM_S.sub(lambda match: "%%" if match.group(1) is None else
                             "-" if match.group(1) == "r" else "%s", text)
    try:
        positional % tuple("" for _ in expressions)
    except (TypeError, ValueError) as error:
        raise ValueError(f"access log format {text!r}: {error}") from None
    without = [expression for index, expression in enumerate(expressions)
               if not any(start <= index < start + 3 for start in request_lines)]
    return _render_function(positional, expressions, no_request, without, clock, worker, pid)


def _render_function(positional: str, expressions: list[str], no_request: str,
                     without: list[str], clock: _Clock, worker: int, pid: int) -> Renderer:
    """Compile the renderer: straight-line code, the request fields the
    line shows looked up once each (in the raw section, see
    :func:`fields_of`), then one ``%`` over the values."""
    names: list[str] = []
    for expression in expressions:
        for name in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", expression):
            if name not in names:
                names.append(name)
    values = {name: f"field{index}" for index, name in enumerate(names)}
    lines = ["def render(entry):",
             "    peer, method, target, version, headers, status, sent, start, seconds = entry",
             "    if int(start) != clock.second:",
             "        clock.at(start)"]
    if names:
        lines += ['    section = getattr(headers, "_section", None)',
                  "    if section and section.__class__ is bytes:",
                  "        lowered = section.lower()"]
        for index, name in enumerate(names):
            field = name.encode("ascii") + b":"
            line = b"\n" + field
            # A field after the first starts a line; the first starts the section.
            lines += [f"        at = lowered.find({line!r}) + 1",
                      f"        if not at and not lowered.startswith({field!r}):",
                      f"            field{index} = None",
                      "        else:",
                      f"            field{index} = _cut(section, at + {len(field)})"]
        lines += ["    elif headers is not None:",
                  *(f"        field{index} = headers.get({name!r})"
                    for index, name in enumerate(names)),
                  "    else:",
                  "        " + " = ".join(values.values()) + " = None"]
    def values_of(chosen: list[str]) -> str:
        return "(" + "".join(expression.format(**values) + ", " for expression in chosen) + ")"

    lines += ["    if method is None:",
              f"        return NO_REQUEST % {values_of(without)}",
              f"    return FORMAT % {values_of(expressions)}"]
    namespace: dict[str, Any] = {
        "FORMAT": positional, "NO_REQUEST": no_request, "clock": clock, "PID": f"<{pid}>",
        "WORKER": str(worker),
        "VERSIONS": _VERSIONS, "_cut": _cut, "_escape": _escape, "_user": _user,
        "_target_part": _target_part, "_protocol": _protocol}
    exec("\n".join(lines) + "\n", namespace)
    render: Renderer = namespace["render"]
    return render


def _cut(section: bytes, start: int) -> str:
    """The field value starting at ``start`` of a raw section."""
    return section[start:section.index(b"\r", start)].strip(b"\t ").decode("latin-1")


def _peer_host(peer: Any) -> str:
    return str(peer[0]) if peer.__class__ is tuple else "-"


def _json_renderer(clock: _Clock, worker: int, pid: int) -> Renderer:
    wanted = needles(("referer", "user-agent"))

    def text(value: Optional[str]) -> str:
        return "null" if value is None else _json_string(value)

    def render(entry: Entry) -> str:
        peer, method, target, version, headers, status, sent, start, seconds = entry
        clock.at(start)
        stamp = clock.iso % (int(start * 1000) % 1000)
        protocol = f'"HTTP/{version[0]}.{version[1]}"' if version is not None else "null"
        referer, agent = fields_of(headers, wanted)
        return (f'{{"time": "{stamp}", "remote": {text(_peer_host(peer))}, '
                f'"method": {text(method)}, "target": {text(target)}, "protocol": {protocol}, '
                f'"status": {status or "null"}, "bytes": {sent}, '
                f'"duration_ms": {seconds * 1000:.3f}, "referer": {text(referer)}, '
                f'"user_agent": {text(agent)}, "worker": {worker}, "pid": {pid}}}')

    return render


# -- one worker's log -----------------------------------------------------------

class AccessLog:
    """One worker's access log: see the module docstring. ``call_later``
    is its loop's (a parallio worker's or an asyncio loop's); ``worker``
    is the worker's number, for the ``w`` atom."""

    def __init__(self, config: AccessLogConfig, call_later: Callable[..., Any],
                 worker: int = 0) -> None:
        self.config = config
        self.render = compile_format(config.format, worker, os.getpid())
        self._call_later = call_later
        self.pending: list[Entry] = []
        self._timer: Any = None
        self.connections = 0
        self._fd, self._owned, self._pipe = _open_output(config.path)
        self._failed = False

    # The request path: keep what the line needs, nothing more.
    def record(self, peer: Any, request: Optional["Request"], status: int, sent: int,
               start: float) -> None:
        """One finished response (``status`` 0 when unknown); ``start`` is
        the ``time.time()`` the request was taken up."""
        now = time.time()
        pending = self.pending
        if request is None:
            pending.append((peer, None, None, None, None, status, sent, start, now - start))
        else:
            pending.append((peer, request.method, request.target, request.http_version,
                            request.headers, status, sent, start, now - start))
        if len(pending) == 1:
            self._timer = self._call_later(FLUSH_INTERVAL, self.flush)
        elif len(pending) >= BATCH:
            self.flush()

    def opened(self) -> None:
        """An HTTP connection of this worker opened."""
        self.connections += 1

    def closed(self) -> None:
        """One closed: once none is left, what is pending is written."""
        self.connections -= 1
        if not self.connections and self.pending:
            self.flush()

    # Off the request path.
    def flush(self) -> None:
        """Render and write every pending line now."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        pending, self.pending = self.pending, []
        if not pending or self._failed:
            return
        render = self.render
        data = ("\n".join([render(entry) for entry in pending]) + "\n").encode("utf-8",
                                                                            "surrogateescape")
        try:
            if self._pipe and len(data) > _PIPE_BUF:
                for piece in _pieces(data):
                    write_all(self._fd, piece)
            else:
                write_all(self._fd, data)
        except OSError as error:
            # One report, then silence: a log that cannot be written must not
            # take the server down or fill the error log.
            self._failed = True
            import logging
            logging.getLogger("parallio.http").error(
                "the access log %s cannot be written (%s); no more lines go to it",
                self.config.path, error.strerror or error)

    def close(self) -> None:
        """Write what is pending and close the log (if this log opened it)."""
        self.flush()
        if self._owned:
            os.close(self._fd)
            self._owned = False


def _open_output(path: str) -> tuple[int, bool, bool]:
    """The descriptor to write to, whether this log owns it, whether it is a
    pipe or socket (where writes above PIPE_BUF may interleave)."""
    if path == "-":
        fd, owned = 1, False
    else:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        owned = True
    mode = os.fstat(fd).st_mode
    return fd, owned, stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _pieces(data: bytes) -> list[bytes]:
    """``data`` cut at line ends into pieces of at most PIPE_BUF bytes (a
    longer line is a piece of its own)."""
    pieces = []
    start = 0
    while len(data) - start > _PIPE_BUF:
        cut = data.rfind(b"\n", start, start + _PIPE_BUF) + 1
        if cut <= start:
            cut = data.find(b"\n", start + _PIPE_BUF) + 1 or len(data)
        pieces.append(data[start:cut])
        start = cut
    if start < len(data):
        pieces.append(data[start:])
    return pieces


# -- configuration ----------------------------------------------------------------

#: The key of the access log's configuration in ``WorkerSpec.extras``.
EXTRAS_KEY = "access_log"
_configured: Optional[AccessLogConfig] = None


def configure(path: Optional[str] = "-", format: str = GUNICORN) -> None:
    """Log every HTTP response of the servers run from now on (main thread,
    before :func:`parallio.run`) to ``path`` (``-``: standard output) in
    ``format``; ``configure(None)`` turns the log off. OSError when the file
    cannot be opened, ValueError for a format it does not understand."""
    global _configured
    if path is None:
        _configured = None
        return
    config = AccessLogConfig(path, format)
    if path != "-":
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as error:
            raise OSError(error.errno, f"access log {path}: {error.strerror}") from None
    _configured = config


def configured() -> Optional[AccessLogConfig]:
    """The configuration :func:`configure` set, or None."""
    return _configured


def _pass_to_workers(runtime: Runtime) -> None:
    if _configured is not None:
        runtime.extras[EXTRAS_KEY] = _configured


_runtime_hooks.append(_pass_to_workers)


class WorkerAccessLog:
    """A worker's access log (an extension of its loop): ``log`` is None
    when the runtime was started without one."""

    def __init__(self, loop: "ProtocolLoop") -> None:
        worker = current_worker()
        config = worker.spec.extras.get(EXTRAS_KEY) if worker is not None else None
        self.log: Optional[AccessLog] = (
            AccessLog(config, loop.call_later, worker.seq_id) if worker and config else None)
