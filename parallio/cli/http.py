"""The HTTP subcommands of ``python -m parallio``: ``http-server``,
``wsgi`` and ``tefb``. HTTP itself is imported when one of them runs."""

from __future__ import annotations

import argparse
import logging
import os

from . import values
from .options import Commands, add_access_log_options, add_run_options, serve, trusted_proxies

log = logging.getLogger("parallio")


def add_timeout_options(parser: argparse.ArgumentParser) -> None:
    """--header-timeout and --idle-timeout, as every HTTP command has them."""
    parser.add_argument("--header-timeout", type=values.positive_seconds, default=10.0,
                        help="seconds a client gets to send a request head (default %(default)s)")
    parser.add_argument("--idle-timeout", type=values.positive_seconds, default=60.0,
                        help="seconds an idle keep-alive connection stays open "
                             "(default %(default)s)")


def _configure_http_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", default=os.curdir,
                        help="the directory to serve (default: the current one)")
    parser.add_argument("--no-listing", dest="listing", action="store_false",
                        help="answer 403 for directories without an index file "
                             "instead of listing them")
    add_run_options(parser, 8000)
    add_timeout_options(parser)
    add_access_log_options(parser)


def _run_http_server(args: argparse.Namespace) -> None:
    from ..http.server import FileServer

    files = FileServer(args.directory, listing=args.listing,
                       header_timeout=args.header_timeout, idle_timeout=args.idle_timeout,
                       forwarded_allow_ips=trusted_proxies(args).spec)
    log.info("serving the files under %s", files.root)
    serve(args, files)


def _configure_wsgi(parser: argparse.ArgumentParser) -> None:
    from ..threadpool import DEFAULT_THREADS

    parser.add_argument("app", metavar="MODULE:APP", nargs="?",
                        help="the WSGI application, importable from the current directory")
    add_run_options(parser, 8000)
    add_timeout_options(parser)
    add_access_log_options(parser)
    parser.add_argument("--threads", type=values.positive_int, default=DEFAULT_THREADS,
                        metavar="N",
                        help="threads per worker that run the application: requests each worker "
                             "serves at once, however long they block (default %(default)s)")
    parser.add_argument("--request-timeout", type=values.positive_seconds, default=None,
                        metavar="SECONDS",
                        help="answer 503 (and close) when the application has not produced its "
                             "response in time; its thread is left to finish on its own "
                             "(default: no limit)")


def _run_wsgi(args: argparse.Namespace) -> None:
    from ..http.wsgi import WsgiServer

    serve(args, WsgiServer(args.app, header_timeout=args.header_timeout,
                           idle_timeout=args.idle_timeout, threads=args.threads,
                           request_timeout=args.request_timeout,
                           forwarded_allow_ips=trusted_proxies(args).spec))


def _configure_tefb(parser: argparse.ArgumentParser) -> None:
    from ..http.tefb_db import default_url

    parser.add_argument("--db", default=None, metavar="URL",
                        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB; created and "
                             f"filled on first start (default {default_url()})")
    add_run_options(parser, 8080)
    add_access_log_options(parser)


def _run_tefb(args: argparse.Namespace) -> None:
    from ..http.tefb import Tefb

    app = Tefb(args.db, forwarded_allow_ips=trusted_proxies(args).spec)
    app.prepare()
    log.info("tefb database %s", app.db)
    serve(args, app)


COMMANDS: Commands = {
    "http-server": ("serve a directory over HTTP, like python -m http.server, on every core",
                    _configure_http_server, _run_http_server),
    "wsgi": ("serve a WSGI (PEP 3333) application on every core", _configure_wsgi, _run_wsgi),
    "tefb": ("serve the TechEmpower benchmark endpoints (/json, /plaintext, /db, /queries, "
             "/updates, /fortunes)", _configure_tefb, _run_tefb),
}
