"""ASGI 3 applications (Starlette, FastAPI, Django, ...) on parallio.

:func:`serve_asgi` is one server on one asyncio event loop: HTTP/1.1
(:mod:`.http`), WebSockets (:mod:`.websocket`) and the lifespan protocol
(:mod:`.lifespan`). :func:`serve` runs it in several workers, each with its
own loop and ``SO_REUSEPORT`` socket (:mod:`.host`); ``python -m parallio
asgi MODULE:APP`` is the command line.

The names below are imported on first use (PEP 562): the command line reads
:class:`Config`'s defaults without loading asyncio and the servers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import AppLoadError, ASGIApp, Config, load_app
    from .host import ServeError, serve
    from .lifespan import Lifespan, LifespanFailure
    from .server import serve_asgi
    from .shared import ClientDisconnected

__all__ = ["ASGIApp", "AppLoadError", "ClientDisconnected", "Config", "Lifespan",
           "LifespanFailure", "ServeError", "load_app", "serve", "serve_asgi"]


def __getattr__(name: str) -> Any:
    if name in ("ASGIApp", "AppLoadError", "Config", "load_app"):
        from . import config as module
    elif name in ("ServeError", "serve"):
        from . import host as module  # type: ignore[no-redef]
    elif name in ("Lifespan", "LifespanFailure"):
        from . import lifespan as module  # type: ignore[no-redef]
    elif name == "serve_asgi":
        from . import server as module  # type: ignore[no-redef]
    elif name == "ClientDisconnected":
        from . import shared as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'parallio.asgi' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
