"""A small, strict HTTP/1.1 client for the HTTP tests: reads responses
framed by Content-Length, chunked encoding or the close, and checks the
framing on the way."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h11


@dataclass
class Reply:
    status: int
    reason: bytes
    headers: dict[str, str]  # lowercase names; repeated fields joined with ", "
    body: bytes
    fields: list[tuple[str, str]] = field(default_factory=list)
    chunked: bool = False


class Client:
    """One connection; ``request`` sends and reads back one exchange."""

    def __init__(self, address: tuple, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address[:2], timeout=timeout)
        self.buffer = bytearray()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, headers: list[tuple[str, str]] = (),
                body: bytes = b"", version: str = "1.1") -> Reply:
        self.send(encode_request(method, target, headers, body, version))
        return self.read(method)

    def get(self, target: str, headers: list[tuple[str, str]] = ()) -> Reply:
        return self.request("GET", target, headers)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        self.buffer += data
        return True

    def read(self, method: str = "GET") -> Reply:
        """The next response; ``method`` of its request decides whether a
        body follows (HEAD: never)."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not self._fill():
                raise ConnectionError(f"closed before a full head: {bytes(self.buffer)[:200]!r}")
        # Only the head is copied: a buffer of many pipelined responses is
        # not copied once per response.
        head = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        lines = head.split(b"\r\n")
        version, status, reason = lines[0].split(b" ", 2)
        assert version == b"HTTP/1.1", lines[0]
        fields = []
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and name == name.strip(), line
            key, text = name.decode().lower(), value.strip().decode("latin-1")
            fields.append((key, text))
            headers[key] = headers[key] + ", " + text if key in headers else text
        status_code = int(status)
        reply = Reply(status_code, reason, headers, b"", fields)
        if method == "HEAD" or status_code in (204, 304) or 100 <= status_code < 200:
            return reply
        if "transfer-encoding" in headers:
            assert headers["transfer-encoding"] == "chunked", headers
            assert "content-length" not in headers
            reply.chunked = True
            reply.body = self._read_chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buffer) < length:
                if not self._fill():
                    raise ConnectionError(f"closed {length - len(self.buffer)} bytes short")
            reply.body = bytes(self.buffer[:length])
            del self.buffer[:length]
        else:
            while self._fill():
                pass
            reply.body = bytes(self.buffer)
            self.buffer.clear()
        return reply

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                if not self._fill():
                    raise ConnectionError("closed inside a chunked body")
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 2]
            size = int(line, 16)
            assert size or line == b"0", line
            while len(self.buffer) < size + 2:
                if not self._fill():
                    raise ConnectionError("closed inside a chunk")
            if not size:
                assert self.buffer[:2] == b"\r\n", bytes(self.buffer[:20])
                del self.buffer[:2]
                return bytes(body)
            body += self.buffer[:size]
            assert self.buffer[size:size + 2] == b"\r\n"
            del self.buffer[:size + 2]

    def closed_by_server(self) -> bool:
        """True if the server closed the connection, with nothing more sent."""
        while self._fill():
            pass
        return not self.buffer


def encode_request(method: str, target: str, headers=(), body: bytes = b"",
                   version: str = "1.1") -> bytes:
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/{version}"]
    if version == "1.1" and "host" not in names:
        lines.append("Host: test")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def address_of(runtime) -> tuple:
    endpoint = runtime.endpoints[0]
    return endpoint.address[0], endpoint.port


def h11_exchange(address: tuple, method: str, target: str, headers=(), body: bytes = b"",
                 timeout: float = 10.0) -> tuple[h11.Response, bytes]:
    """One request through h11: a second, independent check that responses
    are well-formed HTTP/1.1."""
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(address, timeout=timeout) as sock:
        fields = [("Host", "test"), *headers]
        if body:
            fields.append(("Content-Length", str(len(body))))
        sock.sendall(conn.send(h11.Request(method=method, target=target, headers=fields)))
        if body:
            sock.sendall(conn.send(h11.Data(data=body)))
        sock.sendall(conn.send(h11.EndOfMessage()))
        response = None
        data = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(1 << 20))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                assert response is not None
                return response, bytes(data)
