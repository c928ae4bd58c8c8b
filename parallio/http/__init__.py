"""HTTP/1.1 for parallio: a sans-I/O request parser and response writer,
PyParallel's ``http11`` fast path, and :class:`HttpServer` (routes, static
files, streamed responses)."""

from .parser import HttpError, Limits, Request
from .server import HttpServer, Response, route
from .static import FileServer

__all__ = ["HttpServer", "Response", "route", "FileServer", "HttpError", "Limits", "Request"]
