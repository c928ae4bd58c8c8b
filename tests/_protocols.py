"""Protocol classes the runtime tests serve. They live in a module (not in
the test files) so that workers in every host can import them by path."""

from __future__ import annotations

import os
import threading

import parallio


class Echo:
    def data_received(self, transport, data):
        return data


class WhoAmI:
    """Answers each request with the worker's seq id, pid and thread."""

    def data_received(self, transport, data):
        return f"{parallio.thread_seq_id()} {os.getpid()} {threading.get_ident()}\n"


class Greeter:
    initial_bytes_to_send = b"hello\n"

    def data_received(self, transport, data):
        return None


class CallableGreeter:
    @staticmethod
    def initial_bytes_to_send():
        return "welcome\n"


class MadeAndLost:
    """Checks connection_made/connection_lost and the transport's identity."""

    def connection_made(self, transport):
        self.transport = transport
        return f"made {transport.peer[0]} {parallio.transport() is transport}\n"

    def data_received(self, transport, data):
        return f"same {transport is self.transport}\n"

    def connection_lost(self, transport, exc):
        # Visible to the test through the next connection on this worker.
        MadeAndLost.lost = getattr(MadeAndLost, "lost", 0) + 1


class LostCounter:
    def data_received(self, transport, data):
        return f"lost={getattr(MadeAndLost, 'lost', 0)}\n"


class ReturnTypes:
    """The command names what data_received returns."""

    def data_received(self, transport, data):
        command = data.strip()
        if command == b"none":
            return None
        if command == b"bytes":
            return b"bytes\n"
        if command == b"str":
            return "str \u00e9\n"
        if command == b"bytearray":
            return bytearray(b"bytearray\n")
        if command == b"memoryview":
            return memoryview(b"xxmemoryview\n")[2:]
        if command == b"tuple":
            return (b"tu", "p", None, (b"le", b"\n"))
        if command == b"same":
            return data
        if command == b"bad":
            return 42
        return b"?\n"


class NextBytes:
    next_bytes_to_send = b"fixed reply\n"

    def data_received(self, transport, data):
        raise AssertionError("next_bytes_to_send bypasses data_received")


class Lines:
    lines_mode = True
    max_line_length = 1024

    def lines_received(self, transport, line):
        return b"<" + line + b">\n"


class Raises:
    def data_received(self, transport, data):
        if data.startswith(b"boom"):
            raise ValueError("boom")
        return b"ok\n"


class Handled:
    def data_received(self, transport, data):
        raise KeyError(data.decode().strip())

    def exception_handler(self, transport, syscall, exc_info):
        return f"handled {syscall} {exc_info[0].__name__} {exc_info[1]}\n"


class DiesOnRequest:
    """'die' ends the worker (SystemExit is not a callback error); anything
    else answers with the worker's seq id and pid."""

    def data_received(self, transport, data):
        if data.startswith(b"die"):
            raise SystemExit("asked to die")
        return f"{parallio.thread_seq_id()} {os.getpid()}\n"


class BigResponse:
    """Any input gets 8 MiB back (tests partial sends)."""

    size = 8 * 1024 * 1024

    def data_received(self, transport, data):
        return bytes(range(256)) * (self.size // 256)


class SendFile:
    """'PATH' -> the file, framed by a header and a trailer."""

    def data_received(self, transport, data):
        path = data.decode().strip()
        offset, _, rest = path.partition(":")
        if rest:
            length, _, path = rest.partition(":")
            transport.sendfile_ranged(b"[", path, b"]", int(offset), int(length))
        else:
            transport.sendfile(b"[", path, b"]")


class CloseAfterReply:
    def data_received(self, transport, data):
        transport.close()
        return b"bye\n"


class Counter:
    """Counts lines per connection (state is per instance)."""

    lines_mode = True

    def __init__(self):
        self.count = 0

    def lines_received(self, transport, line):
        self.count += 1
        return f"{self.count}\n"


class ClientHello:
    """A client protocol: sends a greeting, records the reply, closes."""

    initial_bytes_to_send = b"ping\n"

    def data_received(self, transport, data):
        transport.close()
        return None


class FastApp:
    """The HTTP fast path (http11 = True)."""

    http11 = True
    header_timeout = 0.5
    idle_timeout = 1.0

    def index(self, transport, request):
        return "<p>index</p>"

    def plaintext(self, transport, request):
        return b"Hello, World!"

    def json(self, transport, request):
        return {"message": "Hello, World!"}

    def echo_header(self, transport, request):
        return request.headers.get("x-probe", "").encode()

    def file(self, transport, request):
        path = request.query
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % os.path.getsize(path))
        transport.sendfile(head, path, None)

    def boom(self, transport, request):
        raise RuntimeError("boom")

    def _private(self, transport, request):
        return b"never"


class LoadedModules:
    """Answers with the parallio.http modules loaded where it runs."""

    def data_received(self, transport, data):
        import json
        import sys
        return json.dumps(sorted(m for m in sys.modules if m.startswith("parallio.http"))) + "\n"


class TlsInfo:
    """Says, as JSON, what the TLS handshake settled, then echoes lines;
    ``file PATH`` sends that file through sendfile, ``bye`` closes."""

    lines_mode = True

    def connection_made(self, transport):
        import json

        subject = None
        cert = transport.peercert
        if cert:
            subject = dict(item for rdn in cert["subject"] for item in rdn)
        return json.dumps({
            "sni": transport.server_hostname, "alpn": transport.alpn_protocol,
            "version": transport.tls_version, "client": subject, "peer": list(transport.peer),
            "proxied": transport.proxy_header is not None,
        }) + "\n"

    def lines_received(self, transport, line):
        if line.startswith(b"file "):
            transport.sendfile(b"<", line[5:].decode(), b">\n")
            return None
        if line == b"bye":
            transport.close()
            return b"bye\n"
        return line + b"\n"


class ProxiedPeer:
    """Answers with the peer, the local address and the PROXY header's version."""

    def connection_made(self, transport):
        header = transport.proxy_header
        version = header.version if header is not None else 0
        return f"{transport.peer[0]} {transport.peer[1]} {transport.local[0]} {version}\n"

    def data_received(self, transport, data):
        return data
