"""The options every serving subcommand takes, and how they are served."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import register, run, server
from ..trust import DEFAULT_TRUSTED, TrustedAddresses

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
    register(transport=server(args.host, args.port, ssl=tls_config(args),
                              proxy_protocol=args.proxy_protocol,
                              proxy_allow_ips=trusted_proxies(args).spec),
             protocol=protocol)
    run(workers=args.workers, parallel=args.parallel, io=args.io,
        drain_timeout=args.drain_timeout)
