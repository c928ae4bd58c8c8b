"""HTTP/1.1 for parallio: a sans-I/O request parser and response writer,
PyParallel's ``http11`` fast path, :class:`HttpServer` (routes, static
files, streamed responses) and :class:`WsgiServer` (PEP 3333). The
TechEmpower benchmark application is :class:`parallio.http.tefb.Tefb`."""

from .connection import note_response
from .parser import HttpError, Limits, Request
from .server import HttpServer, Response, route
from .server import FileServer
from .wsgi import WsgiServer

__all__ = ["HttpServer", "Response", "route", "FileServer", "WsgiServer", "HttpError", "Limits",
           "Request", "note_response"]
