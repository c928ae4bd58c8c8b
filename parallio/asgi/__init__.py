"""ASGI 3 applications (Starlette, FastAPI, Django, ...) on parallio.

:func:`serve_asgi` is one server on one asyncio event loop: HTTP/1.1
(:mod:`.http`), WebSockets (:mod:`.websocket`) and the lifespan protocol
(:mod:`.lifespan`). :func:`serve` runs it in several workers, each with its
own loop and ``SO_REUSEPORT`` socket (:mod:`.host`); ``python -m parallio
asgi MODULE:APP`` is the command line (:mod:`.cli`).
"""

from .config import AppLoadError, ASGIApp, Config, load_app
from .shared import ClientDisconnected
from .lifespan import Lifespan, LifespanFailure
from .host import ServeError, serve
from .server import serve_asgi

__all__ = ["ASGIApp", "AppLoadError", "ClientDisconnected", "Config", "Lifespan",
           "LifespanFailure", "ServeError", "load_app", "serve", "serve_asgi"]
