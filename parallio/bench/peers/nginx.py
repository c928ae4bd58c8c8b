"""nginx as the practical limit of this machine: one worker process, the
same static files through sendfile, and fixed ``/plaintext`` and ``/json``
answers through ``return 200`` (no application code at all, so it bounds
what any Python server could reach on these routes, rather than competing
on equal terms).

nginx runs as a non-daemon child with everything under a temporary prefix,
so it needs no system configuration and leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..apps import PLAINTEXT_BODY

_CONFIG = """\
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {max_connections};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections {max_connections};
    use epoll;
}}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    # TCP_CORK around sendfile tripled nginx's system time per 1 MiB
    # response over loopback on the project's machine (0.33 ms against
    # 0.10 ms), for no gain in req/s.
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    types {{ application/octet-stream bin; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{port} backlog=4096;
        location = /plaintext {{
            default_type text/plain;
            return 200 "{plaintext}";
        }}
        location = /json {{
            default_type application/json;
            return 200 '{{"message":"Hello, World!"}}';
        }}
        location / {{
            root {static_dir};
        }}
    }}
}}
"""


def write_config(prefix: Path, host: str, port: int, static_dir: Path, *, workers: int = 1,
                 max_connections: int = 16384) -> Path:
    """Write nginx.conf under ``prefix`` and return its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    # As root, nginx would switch its worker to 'nobody', who may not read
    # a private temporary directory: keep the worker as the caller.
    user = "user root;" if os.geteuid() == 0 else ""
    config = prefix / "nginx.conf"
    config.write_text(_CONFIG.format(
        workers=workers, max_connections=max_connections, prefix=prefix, user=user,
        host=host, port=port, plaintext=PLAINTEXT_BODY.decode(), static_dir=static_dir))
    return config


def command(nginx: str, prefix: Path, config: Path) -> list[str]:
    """The command line that runs nginx in the foreground on ``config``."""
    # -e: before reading the config nginx opens its default error log under
    # /var/log, which need not exist or be writable.
    return [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
