"""``python -m parallio asgi MODULE:APP``: an ASGI application on every core."""

from __future__ import annotations

import argparse
import logging
from typing import Optional

from .._listen import release
from . import values
from .http import add_timeout_options
from .options import (Commands, access_log_config, add_access_log_options, add_run_options,
                      listen_endpoints, reloading, runtime_only_options, tls_config,
                      trusted_proxies)

__all__ = ["COMMANDS"]

log = logging.getLogger("parallio")


def _optional_seconds(text: str) -> Optional[float]:
    if text.lower() in ("none", "off", "0"):
        return None
    return values.positive_seconds(text)


def configure(parser: argparse.ArgumentParser) -> None:
    from ..asgi.config import Config

    parser.add_argument("app", metavar="MODULE:APP", nargs="?",
                        help="the ASGI 3 application, importable from the current directory")
    add_run_options(parser, 8000)
    add_timeout_options(parser)
    add_access_log_options(parser)
    parser.add_argument("--root-path", default="",
                        help="the path the application is mounted at behind a proxy")
    parser.add_argument("--lifespan", default="auto", choices=["auto", "on", "off"],
                        help="the ASGI lifespan protocol: auto (if the application speaks it), "
                             "on (required), off (default %(default)s)")
    parser.add_argument("--request-timeout", type=_optional_seconds, default=None, metavar="SECONDS",
                        help="cut off a response that takes longer (503 if nothing was sent); "
                             "default: no limit")
    parser.add_argument("--ws-max-size", type=values.positive_int,
                        default=Config.ws_max_message_size,
                        metavar="BYTES", help="largest WebSocket message (default %(default)s)")
    parser.add_argument("--ws-ping-interval", type=_optional_seconds, default=Config.ws_ping_interval,
                        metavar="SECONDS", help="ping idle WebSockets this often; 'none' for never "
                                                "(default %(default)s)")
    parser.add_argument("--ws-ping-timeout", type=_optional_seconds, default=Config.ws_ping_timeout,
                        metavar="SECONDS", help="close a WebSocket whose pong is this late "
                                                "(default %(default)s)")
    parser.add_argument("--no-ws-deflate", dest="ws_deflate", action="store_false",
                        help="do not negotiate permessage-deflate")


def run(args: argparse.Namespace) -> None:
    from ..asgi.config import Config
    from ..asgi.workers import ServeError, serve

    if reloading(args):
        return
    if args.proxy_protocol:
        raise ServeError("--proxy-protocol: not available to the asgi command yet (asyncio's "
                         "server protocol reads no PROXY headers)")
    unsupported = runtime_only_options(args)
    if unsupported:
        raise ServeError(f"{', '.join(unsupported)}: not available to the asgi command yet "
                         "(its workers run parallio's event loop, which these do not supervise)")
    try:
        config = Config(root_path=args.root_path.rstrip("/"), lifespan=args.lifespan,
                        tls=tls_config(args), forwarded_allow_ips=trusted_proxies(args),
                        header_timeout=args.header_timeout, idle_timeout=args.idle_timeout,
                        request_timeout=args.request_timeout, drain_timeout=args.drain_timeout,
                        ws_max_message_size=args.ws_max_size,
                        ws_ping_interval=args.ws_ping_interval,
                        ws_ping_timeout=args.ws_ping_timeout,
                        ws_per_message_deflate=args.ws_deflate,
                        access_log=access_log_config(args))
    except ValueError as error:
        raise ServeError(str(error)) from None
    endpoints = listen_endpoints(args)
    try:
        serve(args.app, workers=args.workers, parallel=args.parallel, io=args.io,
              config=config, endpoints=endpoints)
    finally:
        for endpoint in endpoints:
            release(endpoint)


COMMANDS: Commands = {
    "asgi": ("serve an ASGI 3 application (Starlette, FastAPI, Django...) on every core",
             configure, run),
}
