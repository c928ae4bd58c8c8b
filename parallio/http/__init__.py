"""HTTP/1.1 for parallio: a sans-I/O request parser and response writer,
PyParallel's ``http11`` fast path, :class:`HttpServer` (routes, static
files, streamed responses) and :class:`WsgiServer` (PEP 3333). The
TechEmpower benchmark application is :class:`parallio.http.tefb.Tefb`.

The names below are imported on first use (PEP 562): a worker that only
parses requests does not load the servers it does not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .parser import HttpError, Limits, Request
    from .server import FileServer, HttpServer, Response, route
    from .wsgi import WsgiServer

__all__ = ["HttpServer", "Response", "route", "FileServer", "WsgiServer", "HttpError", "Limits",
           "Request"]


def __getattr__(name: str) -> Any:
    if name in ("HttpError", "Limits", "Request"):
        from . import parser as module
    elif name in ("HttpServer", "Response", "route", "FileServer"):
        from . import server as module  # type: ignore[no-redef]
    elif name == "WsgiServer":
        from . import wsgi as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'parallio.http' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
