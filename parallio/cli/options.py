"""The options every serving subcommand takes, and how they are served."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import Supervision, register, run, server
from ..trust import DEFAULT_TRUSTED, TrustedAddresses
from .reload import serve_with_reload

if TYPE_CHECKING:
    from ..tls import TlsConfig

#: What a module of subcommands provides: name -> (help, configure the
#: parser, run from parsed arguments).
Commands = dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], None]]]


def add_run_options(parser: argparse.ArgumentParser, port: int) -> None:
    """The options every serving subcommand takes."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; '::' or '0.0.0.0' for all (default %(default)s)")
    parser.add_argument("--port", type=int, default=port, help="TCP port (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="number of workers (default: the CPUs this process may use)")
    parser.add_argument("--parallel", default="auto",
                        choices=["auto", "threads", "interpreters", "processes"],
                        help="where workers run: threads (parallel on free-threaded builds), "
                             "isolated interpreters (3.13+), processes; auto picks the best "
                             "(default %(default)s)")
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"],
                        help="I/O engine; auto uses io_uring where the kernel allows it "
                             "(default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds in-flight sends get to finish on SIGINT/SIGTERM "
                             "(default %(default)s)")
    add_supervision_options(parser)
    add_edge_options(parser)


def add_edge_options(parser: argparse.ArgumentParser) -> None:
    """TLS and proxies: what every serving command takes for what comes
    between the client and the protocol."""
    tls = parser.add_argument_group("TLS (with --certfile the port speaks only TLS)")
    tls.add_argument("--certfile", metavar="PEM",
                     help="the server certificate (then its chain), PEM")
    tls.add_argument("--keyfile", metavar="PEM",
                     help="its private key, PEM (default: in --certfile)")
    tls.add_argument("--keyfile-password", metavar="PASSWORD",
                     help="the password of an encrypted --keyfile")
    tls.add_argument("--ca-certs", metavar="PEM",
                     help="CA certificates that client certificates must be signed by")
    tls.add_argument("--cert-reqs", default="none", metavar="none|optional|required",
                     help="ask clients for a certificate (verified with --ca-certs): none, "
                          "optional or required, or 0, 1, 2 (default %(default)s)")
    tls.add_argument("--ciphers", metavar="LIST",
                     help="OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)")
    proxies = parser.add_argument_group("behind proxies")
    proxies.add_argument("--forwarded-allow-ips", metavar="ADDRESSES",
                         default=os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_TRUSTED),
                         help="comma-separated addresses and networks (10.0.0.0/8) of the "
                              "proxies to believe, or '*': their X-Forwarded-For/-Proto/-Host "
                              "and Forwarded fields, and their PROXY headers, say who the client "
                              "is (default: $FORWARDED_ALLOW_IPS, else %(default)s)")
    proxies.add_argument("--proxy-protocol", action="store_true",
                         help="every connection starts with a PROXY protocol header (v1 or "
                              "v2, HAProxy's send-proxy), from --forwarded-allow-ips only")


def tls_config(args: argparse.Namespace) -> Optional["TlsConfig"]:
    """The TLS settings of the command line, or None without --certfile."""
    if not args.certfile:
        for option in ("keyfile", "keyfile_password", "ca_certs", "ciphers"):
            if getattr(args, option):
                raise ValueError(f"--{option.replace('_', '-')} needs --certfile")
        return None
    from ..tls import TlsConfig

    cert_reqs = args.cert_reqs
    return TlsConfig(args.certfile, args.keyfile, password=args.keyfile_password,
                     ca_certs=args.ca_certs,
                     cert_reqs=int(cert_reqs) if cert_reqs.isdigit() else cert_reqs,
                     ciphers=args.ciphers)


def trusted_proxies(args: argparse.Namespace) -> TrustedAddresses:
    return TrustedAddresses(args.forwarded_allow_ips)


def serve(args: argparse.Namespace, protocol: Any) -> None:
    """Serve ``protocol`` (what :func:`parallio.register` takes) as the
    run options in ``args`` say."""
    if reloading(args):
        return
    register(transport=server(args.host, args.port, backlog=args.backlog, ssl=tls_config(args),
                              proxy_protocol=args.proxy_protocol,
                              proxy_allow_ips=trusted_proxies(args).spec),
             protocol=protocol)
    run(workers=args.workers, parallel=args.parallel, io=args.io,
        drain_timeout=args.drain_timeout, supervision=supervision_of(args),
        processes=args.processes)


# -- supervision: hung workers, recycling, limits, reloads ----------------------------

def _count(text: str, least: int) -> int:
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def _positive_int(text: str) -> int:
    return _count(text, 1)


def _non_negative_int(text: str) -> int:
    return _count(text, 0)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def add_supervision_options(parser: argparse.ArgumentParser) -> None:
    """How workers are watched, recycled and limited, and reloads."""
    group = parser.add_argument_group("supervision")
    group.add_argument("--processes", type=_positive_int, default=None, metavar="P",
                       help="run --workers isolated interpreters in each of P processes "
                            "(CPython 3.13+): a fatal fault in one ends its process, which is "
                            "restarted, not the whole server")
    group.add_argument("--worker-timeout", type=_positive_seconds, default=None,
                       metavar="SECONDS",
                       help="a worker silent this long is hung: it is replaced where it has a "
                            "process of its own, and logged where it shares one "
                            "(default: not watched)")
    group.add_argument("--max-requests", type=_positive_int, default=None, metavar="N",
                       help="replace a worker, gracefully, after about N requests "
                            "(connections, for protocols other than HTTP)")
    group.add_argument("--max-requests-jitter", type=_non_negative_int, default=0, metavar="J",
                       help="add up to J to --max-requests, drawn per worker, so that workers "
                            "are not all replaced at once (default %(default)s)")
    group.add_argument("--max-rss", type=_positive_int, default=None, metavar="MB",
                       help="replace a worker, gracefully, once its resident memory passes MB "
                            "megabytes (processes host)")
    group.add_argument("--limit-concurrency", type=_positive_int, default=None, metavar="N",
                       help="connections one worker serves at once; HTTP answers those beyond "
                            "with 503")
    group.add_argument("--backlog", type=_positive_int, default=1024, metavar="N",
                       help="connections waiting to be accepted, per worker (default %(default)s)")
    group.add_argument("--timeout-graceful-shutdown", dest="drain_timeout",
                       type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                       help="the same as --drain-timeout")
    group.add_argument("--reload", action="store_true",
                       help="for development: restart the server when a .py file under the "
                            "current directory (or a --reload-dir) changes")
    group.add_argument("--reload-dir", action="append", default=None, metavar="DIR",
                       help="a directory --reload watches (repeatable)")


def supervision_of(args: argparse.Namespace) -> Supervision:
    """The :class:`~parallio.Supervision` the options in ``args`` ask for."""
    return Supervision(
        worker_timeout=args.worker_timeout, max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        max_rss=None if args.max_rss is None else args.max_rss * 2**20,
        limit_concurrency=args.limit_concurrency)


def runtime_only_options(args: argparse.Namespace) -> list[str]:
    """The supervision options given in ``args`` that only commands served
    by parallio's runtime honour (the asgi command's interim host does not)."""
    given = [name for name in ("processes", "worker_timeout", "max_requests", "max_rss",
                               "limit_concurrency") if getattr(args, name) is not None]
    if args.backlog != 1024:
        given.append("backlog")
    return ["--" + name.replace("_", "-") for name in given]


def reloading(args: argparse.Namespace) -> bool:
    """With ``--reload``, run this command line in a child process that is
    restarted on source changes, until stopped; True once that is done."""
    if not args.reload:
        return False
    serve_with_reload(args.reload_dir or ["."])
    return True
