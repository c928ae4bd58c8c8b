"""ASGI 3 applications (Starlette, FastAPI, Django, ...) on parallio.

:func:`serve_asgi` is one server on one asyncio event loop: HTTP/1.1
(:mod:`.http`), WebSockets (:mod:`.websocket`) and the lifespan protocol
(:mod:`.lifespan`). :func:`serve` runs it in every worker of
:func:`parallio.loop.run_on_all_cores`, each on its own parallio loop and
``SO_REUSEPORT`` socket (:mod:`.workers`); ``python -m parallio asgi
MODULE:APP`` is the command line (:mod:`parallio.cli.asgi`).
"""

from .config import AppLoadError, ASGIApp, Config, load_app
from .shared import ClientDisconnected
from .lifespan import Lifespan, LifespanFailure
from .workers import ServeError, serve
from .server import serve_asgi

__all__ = ["ASGIApp", "AppLoadError", "ClientDisconnected", "Config", "Lifespan",
           "LifespanFailure", "ServeError", "load_app", "serve", "serve_asgi"]
