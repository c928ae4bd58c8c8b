"""The options every serving subcommand takes, and how they are served."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import Supervision, _listen, register, run, server
from .._spec import Endpoint
from ..trust import DEFAULT_TRUSTED, TrustedAddresses
from . import values
from .reload import serve_with_reload

if TYPE_CHECKING:
    from ..tls import TlsConfig

#: What a module of subcommands provides: name -> (help, configure the
#: parser, run from parsed arguments).
Commands = dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], None]]]

DEFAULT_HOST = "127.0.0.1"


def add_run_options(parser: argparse.ArgumentParser, port: int) -> None:
    """The options every serving subcommand takes."""
    add_listen_options(parser, port)
    add_edge_options(parser)
    add_worker_options(parser)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """How many workers, where they run, their engine and their drain."""
    parser.add_argument("--workers", type=values.positive_int, default=None,
                        help="number of workers (default: the CPUs this process may use)")
    parser.add_argument("--parallel", default="auto",
                        choices=["auto", "threads", "interpreters", "processes"],
                        help="where workers run: threads (parallel on free-threaded builds), "
                             "isolated interpreters (3.13+), processes; auto picks the best "
                             "(default %(default)s)")
    parser.add_argument("--io", default="auto", choices=["auto", "uring", "epoll"],
                        help="I/O engine; auto uses io_uring where the kernel allows it "
                             "(default %(default)s)")
    parser.add_argument("--drain-timeout", type=values.seconds, default=10.0,
                        help="seconds in-flight sends get to finish on SIGINT/SIGTERM "
                             "(default %(default)s)")
    add_supervision_options(parser)
    add_global_options(parser)


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


# -- where to listen ------------------------------------------------------------

def add_listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    """--host/--port, --bind and --uds-mode."""
    group = parser.add_argument_group(
        "listening", "Where the server listens: --host/--port, any number of --bind, and the "
                     "sockets of systemd socket activation (LISTEN_FDS), which are used "
                     "automatically.")
    group.add_argument("--host", default=None,
                       help=f"address to listen on: '0.0.0.0' for every IPv4 interface, '::' for "
                            f"every interface, IPv4 and IPv6 (default {DEFAULT_HOST}, unless "
                            "--bind or socket activation says where)")
    group.add_argument("--port", type=values.port, default=None,
                       help=f"TCP port; 0 picks a free one (default {port})")
    def bind(text: str) -> _listen.Bind:
        try:
            return _listen.parse_bind(text, port)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    group.add_argument("--bind", action="append", type=bind, default=None, metavar="ADDRESS",
                       help="listen on ADDRESS too; repeatable: HOST:PORT, [IPV6]:PORT, "
                            "unix:PATH, fd://N (a listening socket inherited as descriptor N)")
    group.add_argument("--uds-mode", type=values.octal_mode, default=None, metavar="MODE",
                       help="permissions of the unix sockets made for --bind unix:PATH, in "
                            "octal (e.g. 660; default: from the umask)")
    parser.set_defaults(default_port=port)


def listen_endpoints(args: argparse.Namespace) -> list[Endpoint]:
    """The servers ``args`` ask for, listening: each ``--bind``,
    ``--host``/``--port`` (also when nothing else says where), and the
    sockets systemd passed."""
    binds: list[_listen.Bind] = list(args.bind or ())
    inherited = _listen.systemd_servers(args.backlog)
    if args.host is not None or args.port is not None or not (binds or inherited):
        binds.insert(0, _listen.Bind("tcp", host=args.host or DEFAULT_HOST,
                                     port=args.default_port if args.port is None else args.port))
    edge: dict[str, Any] = {}
    if hasattr(args, "certfile"):
        edge = dict(ssl=tls_config(args), proxy_protocol=args.proxy_protocol,
                    proxy_allow_ips=trusted_proxies(args).spec)
    endpoints: list[Endpoint] = []
    try:
        for bind in binds:
            if bind.kind == "unix":
                endpoints.append(server(path=bind.path, mode=args.uds_mode, backlog=args.backlog,
                                        **edge))
            elif bind.kind == "fd":
                endpoints.append(server(fd=bind.fd, backlog=args.backlog, **edge))
            else:
                endpoints.append(server(bind.host, bind.port, backlog=args.backlog, **edge))
        for endpoint in inherited:
            if edge.get("ssl") is not None:
                from ..tls import ssl_source
                endpoint.tls = ssl_source(edge["ssl"])
            if edge.get("proxy_protocol"):
                endpoint.proxy_allowed = TrustedAddresses(edge["proxy_allow_ips"])
    except BaseException:
        for endpoint in endpoints + inherited:
            _listen.release(endpoint)
        raise
    return endpoints + inherited


# -- options of every command ---------------------------------------------------

def add_global_options(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """--log-level, --log-config and --config: on the top-level parser with
    their defaults, and on every subcommand without (so they work anywhere
    on the line)."""
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    parser.add_argument("--log-level", type=values.log_level, default=default("INFO"),
                        metavar="LEVEL", help="debug, info, warning or error (default info)")
    parser.add_argument("--log-config", default=default(None), metavar="FILE",
                        help="configure logging with logging.config.dictConfig from a JSON or "
                             "TOML file (%%(worker)s in a format names the worker)")
    parser.add_argument("--config", default=default(None), metavar="FILE",
                        help="read options from a TOML file, or from the [tool.parallio] table "
                             "of a pyproject.toml; PARALLIO_* variables override it, the "
                             "command line overrides both")


# -- the access log ---------------------------------------------------------------

def add_access_log_options(parser: argparse.ArgumentParser) -> None:
    """--access-log and --access-log-format, for the HTTP commands."""
    from ..http import accesslog

    group = parser.add_argument_group("access log")
    group.add_argument("--access-log", nargs="?", const="-", default=None, metavar="PATH",
                       help="log every response to PATH ('-' or no value: standard output); "
                            "each worker writes its own batches")
    group.add_argument("--access-log-format", type=_access_log_format, default=accesslog.GUNICORN,
                       metavar="FORMAT",
                       help="gunicorn's atoms (%%(h)s %%(t)s %%(r)s %%(s)s %%(b)s %%(D)s ...; "
                            "see README) or 'json' (default: the combined log format)")


def _access_log_format(text: str) -> str:
    from ..http import accesslog

    try:
        accesslog.compile_format(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def access_log_config(args: argparse.Namespace) -> Any:
    """The access log ``args`` ask for (an AccessLogConfig), or None."""
    if getattr(args, "access_log", None) is None:
        return None
    from ..http import accesslog

    return accesslog.AccessLogConfig(args.access_log, args.access_log_format)


def serve(args: argparse.Namespace, protocol: Any) -> None:
    """Serve ``protocol`` (what :func:`parallio.register` takes) as the
    run options in ``args`` say."""
    if reloading(args):
        return
    config = access_log_config(args)
    if config is not None:
        from ..http import accesslog

        accesslog.configure(config.path, config.format)
    endpoints = listen_endpoints(args)
    try:
        for endpoint in endpoints:
            register(transport=endpoint, protocol=protocol)
        run(workers=args.workers, parallel=args.parallel, io=args.io,
            drain_timeout=args.drain_timeout, supervision=supervision_of(args),
            processes=args.processes)
    finally:
        # What run() did not get to close (it failed before starting): no
        # socket file may outlive the command.
        for endpoint in endpoints:
            _listen.release(endpoint)


# -- supervision: hung workers, recycling, limits, reloads ----------------------------

def add_supervision_options(parser: argparse.ArgumentParser) -> None:
    """How workers are watched, recycled and limited, and reloads."""
    group = parser.add_argument_group("supervision")
    group.add_argument("--processes", type=values.positive_int, default=None, metavar="P",
                       help="run --workers isolated interpreters in each of P processes "
                            "(CPython 3.13+): a fatal fault in one ends its process, which is "
                            "restarted, not the whole server")
    group.add_argument("--worker-timeout", type=values.positive_seconds, default=None,
                       metavar="SECONDS",
                       help="a worker silent this long is hung: it is replaced where it has a "
                            "process of its own, and logged where it shares one "
                            "(default: not watched)")
    group.add_argument("--max-requests", type=values.positive_int, default=None, metavar="N",
                       help="replace a worker, gracefully, after about N requests "
                            "(connections, for protocols other than HTTP)")
    group.add_argument("--max-requests-jitter", type=values.non_negative_int, default=0,
                       metavar="J",
                       help="add up to J to --max-requests, drawn per worker, so that workers "
                            "are not all replaced at once (default %(default)s)")
    group.add_argument("--max-rss", type=values.positive_int, default=None, metavar="MB",
                       help="replace a worker, gracefully, once its resident memory passes MB "
                            "megabytes (processes host)")
    group.add_argument("--limit-concurrency", type=values.positive_int, default=None, metavar="N",
                       help="connections one worker serves at once; HTTP answers those beyond "
                            "with 503")
    group.add_argument("--backlog", type=values.positive_int, default=1024, metavar="N",
                       help="connections waiting to be accepted, per worker (default %(default)s)")
    group.add_argument("--timeout-graceful-shutdown", dest="drain_timeout",
                       type=values.seconds, default=argparse.SUPPRESS, metavar="SECONDS",
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
    by parallio's protocol runtime honour (the asgi command's workers run
    parallio's event loop, which they do not supervise yet)."""
    given = [name for name in ("processes", "worker_timeout", "max_requests", "max_rss",
                               "limit_concurrency") if getattr(args, name) is not None]
    return ["--" + name.replace("_", "-") for name in given]


def reloading(args: argparse.Namespace) -> bool:
    """With ``--reload``, run this command line in a child process that is
    restarted on source changes, until stopped; True once that is done."""
    if not args.reload:
        return False
    serve_with_reload(args.reload_dir or ["."])
    return True
