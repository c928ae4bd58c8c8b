"""``python -m parallio wiki``: serve the wiki (``wiki --data DIR``) or
build its data (``wiki build [--source PATH] --data DIR``)."""

from __future__ import annotations

import argparse
import logging

from .http import add_timeout_options
from .options import Commands, add_run_options, serve

log = logging.getLogger("parallio")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR",
                        help="the data directory that `wiki build` made")
    add_run_options(parser, 8080)
    add_timeout_options(parser)
    actions = parser.add_subparsers(dest="wiki_action", metavar="build")
    build = actions.add_parser(
        "build", help="unpack a dictd database into DIR and index its headwords",
        description="Unpack a dictd database (Debian's dict-gcide by default, installed when "
                    "missing and allowed) into DIR and write the index the server shares.")
    build.add_argument("--source", metavar="PATH", default=None,
                       help="a dictd .index or .dict[.dz] file, their base name, or a directory "
                            "holding one pair (default: /usr/share/dictd/gcide)")
    build.add_argument("--data", metavar="DIR", required=True,
                       help="where to write the text and the index")
    build.add_argument("--no-install", dest="install", action="store_false",
                       help="never apt-get install the default dictionary")


def _run(args: argparse.Namespace) -> None:
    if args.wiki_action == "build":
        from ..wiki.build import Progress, build, find_source

        progress = Progress()
        index_path, text_path = find_source(args.source, args.install, progress.say)
        build(index_path, text_path, args.data, progress)
        return
    if not args.data:
        raise ValueError("wiki: --data DIR is required (make DIR with: python -m parallio "
                         "wiki build --data DIR)")
    from .. import cpu_count
    from ..wiki.app import Wiki

    wiki = Wiki(args.data, header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    index = wiki.prepare(args.workers or cpu_count())
    log.info("parallio: wiki of %s headwords (index %.1f MB, text %.1f MB) from %s%s",
             f"{index.keys:,}", index.nbytes / 1e6, index.text_size / 1e6, wiki.data_dir,
             f": {index.title}" if index.title else "")
    serve(args, wiki)


COMMANDS: Commands = {
    "wiki": ("PyParallel's instant search over a dictionary (dict-gcide): "
             "`wiki build --data DIR`, then `wiki --data DIR`", _configure, _run),
}
