"""Sans-I/O WebSocket codec: RFC 6455 frames and messages, RFC 7692
permessage-deflate, and the opening handshake's checks.

Nothing here touches a socket. A server (or client) feeds the bytes it
receives and sends the bytes it is given::

    connection = WebSocketConnection(max_message_size=1 << 20, deflate=deflate)
    connection.receive_data(data)
    try:
        for event in connection.events():     # Message, Ping, Pong, CloseReceived
            ...
    except WebSocketError as error:            # the peer broke the protocol
        send(connection.close(error.code, error.reason))
        close_the_socket()

    send(connection.send_message("text"))     # str: a text message, bytes: binary

The receiving side enforces everything RFC 6455 §5 requires of a peer, and
fails the connection with the close code §7.4.1 gives for it:

* Masking: a server only accepts masked frames, a client only unmasked ones
  (1002).
* RSV1 only on the first frame of a message, and only with permessage-deflate
  negotiated; RSV2/RSV3 never (1002). Reserved opcodes (1002).
* Control frames: never fragmented, payload at most 125 bytes (1002); they
  may arrive between the fragments of a message, which they do not disturb.
* Fragmentation: a continuation frame needs a message in progress, a new
  data frame needs none (1002).
* Text is validated as UTF-8 fragment by fragment, so a message fails as soon
  as its first invalid byte arrives, not at its end (1007).
* Close frames: a 1-byte payload, a code §7.4 forbids on the wire (1004-1006,
  1015, below 1000, unassigned 1016-2999, 5000+) or a reason that is not UTF-8
  fail the connection (1002, 1007).
* ``max_message_size`` bounds a message's bytes after decompression (1009),
  checked as frames are announced and as they are inflated, so neither a
  huge frame header nor a deflate bomb makes the receiver buffer past it.
* An 8-byte payload length with its top bit set (1002).

After a :class:`WebSocketError` the connection is dead: every later
:meth:`WebSocketConnection.events` call raises the same error.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Iterator, Optional, Union

__all__ = [
    "GUID",
    "Opcode",
    "CloseCode",
    "WebSocketError",
    "HandshakeError",
    "Message",
    "Ping",
    "Pong",
    "CloseReceived",
    "Event",
    "WebSocketConnection",
    "PerMessageDeflate",
    "UpgradeRequest",
    "accept_key",
    "is_upgrade_request",
    "parse_upgrade_request",
    "parse_extensions",
    "negotiate_deflate",
    "encode_frame",
    "apply_mask",
    "is_valid_close_code",
]

#: RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """RFC 6455 §7.4.1 and the IANA registry."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL = 1006  # never on the wire: "the connection dropped"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 §7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class WebSocketError(Exception):
    """The peer broke the protocol; close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


class HandshakeError(Exception):
    """An upgrade request the server must refuse with ``status`` (and
    ``headers``, e.g. the supported Sec-WebSocket-Version for a 426)."""

    def __init__(self, status: int, reason: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


# --- events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A whole data message: ``str`` for text, ``bytes`` for binary."""

    data: Union[str, bytes]


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame. ``code`` is 1005 when the frame had none.
    Answer it with :meth:`WebSocketConnection.close` unless already closing."""

    code: int
    reason: str


Event = Union[Message, Ping, Pong, CloseReceived]


# --- frames --------------------------------------------------------------------

_FIN = 0x80
_RSV1 = 0x40
_RSV2_RSV3 = 0x30
_MASK = 0x80
_DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY))
_CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
_KNOWN_OPCODES = frozenset(Opcode)
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")
_MAX_CONTROL_PAYLOAD = 125
# Deflate's worst case for incompressible data is a few bytes per 16 KiB
# block; a compressed message may exceed the size limit on the wire by this.
_DEFLATE_SLACK_RATIO = 1000
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def apply_mask(data: Union[bytes, bytearray, memoryview], mask: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3); masking and
    unmasking are the same operation. One big-integer XOR: linear, in C."""
    size = len(data)
    if not size:
        return b""
    key = mask * (size >> 2) + mask[: size & 3]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
                 mask: Optional[bytes] = None) -> bytes:
    """One frame. ``mask`` (4 bytes) masks the payload, as a client must."""
    first = opcode | (_FIN if fin else 0) | (_RSV1 if rsv1 else 0)
    size = len(payload)
    mask_bit = _MASK if mask is not None else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        head = bytes((first, mask_bit | 126)) + _LENGTH16.pack(size)
    else:
        head = bytes((first, mask_bit | 127)) + _LENGTH64.pack(size)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def _close_payload(code: int, reason: str) -> bytes:
    if code == CloseCode.NO_STATUS:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(f"close reason is {len(encoded)} bytes; at most 123 fit in a close frame")
    return _LENGTH16.pack(code) + encoded


def _parse_close_payload(payload: bytes) -> CloseReceived:
    if not payload:
        return CloseReceived(CloseCode.NO_STATUS, "")
    if len(payload) == 1:
        raise WebSocketError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = _LENGTH16.unpack_from(payload)
    if not is_valid_close_code(code):
        raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return CloseReceived(code, reason)


# --- permessage-deflate ----------------------------------------------------------


class PerMessageDeflate:
    """The negotiated permessage-deflate state of one connection (RFC 7692).

    ``local_*`` parameters govern what this side compresses, ``remote_*``
    what it decompresses. Without ``no_context_takeover`` the LZ77 window
    carries over from message to message (the default, and the point).
    """

    def __init__(self, *, local_no_context_takeover: bool = False,
                 remote_no_context_takeover: bool = False,
                 local_max_window_bits: int = 15, remote_max_window_bits: int = 15,
                 compress_level: int = zlib.Z_DEFAULT_COMPRESSION, mem_level: int = 8) -> None:
        for bits in (local_max_window_bits, remote_max_window_bits):
            if not 8 <= bits <= 15:
                raise ValueError(f"window bits must be 8..15, not {bits}")
        if local_max_window_bits == 8:
            # zlib silently raises a raw deflate window of 8 to 9, which
            # would break the promise made to the peer.
            raise ValueError("zlib cannot compress with an 8-bit window")
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self._level = compress_level
        self._mem_level = mem_level
        self._compressor = self._new_compressor()
        self._decompressor = zlib.decompressobj(-remote_max_window_bits)

    def _new_compressor(self) -> "zlib._Compress":
        return zlib.compressobj(self._level, zlib.DEFLATED, -self.local_max_window_bits,
                                self._mem_level)

    def compress(self, data: bytes) -> bytes:
        """One message's payload, compressed (§7.2.1: flushed, tail removed)."""
        compressed = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.local_no_context_takeover:
            self._compressor = self._new_compressor()
        if compressed.endswith(_DEFLATE_TAIL):
            compressed = compressed[:-4]
        return compressed or b"\x00"

    def decompress(self, data: bytes, final: bool, max_size: int) -> bytes:
        """Inflate one frame's payload of a compressed message; at most
        ``max_size`` bytes, else 1009. ``final`` ends the message."""
        decompressor = self._decompressor
        if final:
            data = data + _DEFLATE_TAIL
        try:
            output = decompressor.decompress(data, max_size + 1)
        except zlib.error as error:
            raise WebSocketError(CloseCode.INVALID_DATA, f"bad deflate data: {error}") from None
        if len(output) > max_size or decompressor.unconsumed_tail:
            raise WebSocketError(CloseCode.MESSAGE_TOO_BIG, "message too big once inflated")
        if final and self.remote_no_context_takeover:
            self._decompressor = zlib.decompressobj(-self.remote_max_window_bits)
        return output

    def response_params(self, client_max_window_bits_offered: bool) -> str:
        """The Sec-WebSocket-Extensions value a server answers with."""
        parts = ["permessage-deflate"]
        if self.local_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.remote_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.local_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.local_max_window_bits}")
        if client_max_window_bits_offered and self.remote_max_window_bits != 15:
            parts.append(f"client_max_window_bits={self.remote_max_window_bits}")
        return "; ".join(parts)


def _window_bits(value: Optional[str]) -> Optional[int]:
    """A max_window_bits value: 1*DIGIT in 8..15, no leading zero (§7.1.2)."""
    if value is None or not re.fullmatch(r"[1-9][0-9]?", value):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate_deflate(
    offers: Iterable[tuple[str, list[tuple[str, Optional[str]]]]], *,
    server_no_context_takeover: bool = False, client_no_context_takeover: bool = False,
    server_max_window_bits: int = 15, compress_level: int = zlib.Z_DEFAULT_COMPRESSION,
) -> Optional[tuple[str, PerMessageDeflate]]:
    """A server's answer to the client's extension offers (from
    :func:`parse_extensions`): the first permessage-deflate offer it can
    accept, as (response header value, state), or None to decline them all.

    An offer is declined (§7.1) when a parameter is unknown, repeated, has a
    value where none belongs, or a window size outside 8..15; and when it asks
    for an 8-bit server window, which zlib cannot honour.
    """
    for name, params in offers:
        if name != "permessage-deflate":
            continue
        seen: dict[str, Optional[str]] = {}
        acceptable = True
        for param, value in params:
            if param in seen or param not in (
                    "server_no_context_takeover", "client_no_context_takeover",
                    "server_max_window_bits", "client_max_window_bits"):
                acceptable = False
                break
            seen[param] = value
        if not acceptable:
            continue
        if any(seen.get(flag, None) is not None for flag in
               ("server_no_context_takeover", "client_no_context_takeover")):
            continue  # these take no value
        local_bits = server_max_window_bits
        if "server_max_window_bits" in seen:
            requested = _window_bits(seen["server_max_window_bits"])
            if requested is None or requested == 8:
                continue
            local_bits = min(local_bits, requested)
        remote_bits = 15
        client_bits_offered = "client_max_window_bits" in seen
        if client_bits_offered and seen["client_max_window_bits"] is not None:
            limit = _window_bits(seen["client_max_window_bits"])
            if limit is None:
                continue
            remote_bits = limit
        deflate = PerMessageDeflate(
            local_no_context_takeover=server_no_context_takeover
            or "server_no_context_takeover" in seen,
            remote_no_context_takeover=client_no_context_takeover
            or "client_no_context_takeover" in seen,
            local_max_window_bits=local_bits, remote_max_window_bits=remote_bits,
            compress_level=compress_level)
        return deflate.response_params(client_bits_offered), deflate
    return None


# --- the connection --------------------------------------------------------------

# Connection states.
OPEN = "OPEN"
CLOSING = "CLOSING"  # this side sent its close frame, waits for the peer's
CLOSED = "CLOSED"  # both close frames exchanged


class WebSocketConnection:
    """One WebSocket connection after its opening handshake (either side).

    ``client`` selects the role: a client masks what it sends and refuses
    masked frames; a server the reverse. ``deflate`` is the negotiated
    permessage-deflate state (None: not negotiated, RSV1 is an error).
    """

    def __init__(self, *, client: bool = False, max_message_size: int = 16 * 1024 * 1024,
                 deflate: Optional[PerMessageDeflate] = None) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self.client = client
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.state = OPEN
        #: The peer's close frame, once received.
        self.close_received: Optional[CloseReceived] = None
        #: The code this side closed with, once it did.
        self.close_sent: Optional[int] = None
        self._buf = bytearray()
        self._pos = 0
        self._error: Optional[WebSocketError] = None
        # The data message being assembled from fragments.
        self._message_opcode: Optional[int] = None
        self._message_compressed = False
        self._message_size = 0
        self._message_wire_size = 0
        self._pieces: list = []
        # A message's last fragment is decoded with final=True, which leaves
        # the decoder empty for the next message.
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    # -- receiving -----------------------------------------------------------

    def receive_data(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Buffer received bytes; :meth:`events` parses them."""
        if self._pos and self._pos >= len(self._buf) >> 1:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def events(self) -> Iterator[Event]:
        """Every event complete in what was received so far."""
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Optional[Event]:
        """The next event, or None until more data arrives."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                if self.close_received is not None:
                    return None  # nothing may follow a close frame
                frame = self._next_frame()
                if frame is None:
                    return None
                event = self._handle_frame(*frame)
                if event is not None:
                    return event
        except WebSocketError as error:
            self._error = error
            self._pieces = []
            raise

    @property
    def buffered(self) -> int:
        """Received bytes not parsed into events yet."""
        return len(self._buf) - self._pos

    def _next_frame(self) -> Optional[tuple[int, bool, bool, bytes]]:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        opcode = first & 0x0F
        fin = bool(first & _FIN)
        rsv1 = bool(first & _RSV1)
        if first & _RSV2_RSV3:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "RSV2/RSV3 set without an extension")
        if opcode not in _KNOWN_OPCODES:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"reserved opcode 0x{opcode:x}")
        masked = bool(second & _MASK)
        if masked == self.client:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR,
                                 "masked frame from a server" if self.client
                                 else "unmasked frame from a client")
        length = second & 0x7F
        header = 2
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > _MAX_CONTROL_PAYLOAD:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
            if rsv1:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "RSV1 on a control frame")
        else:
            self._check_data_frame(opcode, rsv1)
            if length == 126:
                if available < 4:
                    return None
                (length,) = _LENGTH16.unpack_from(buf, pos + 2)
                header = 4
            elif length == 127:
                if available < 10:
                    return None
                (length,) = _LENGTH64.unpack_from(buf, pos + 2)
                if length >> 63:
                    raise WebSocketError(CloseCode.PROTOCOL_ERROR, "payload length with its top bit set")
                header = 10
            self._check_size(opcode, rsv1, length)
        if masked:
            header += 4
        if available < header + length:
            return None
        start = pos + header
        payload = bytes(buf[start : start + length])
        if masked:
            payload = apply_mask(payload, bytes(buf[start - 4 : start]))
        self._pos = start + length
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        return opcode, fin, rsv1, payload

    def _check_data_frame(self, opcode: int, rsv1: bool) -> None:
        in_message = self._message_opcode is not None
        if opcode == Opcode.CONTINUATION:
            if not in_message:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
            if rsv1:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "RSV1 on a continuation frame")
        else:
            if in_message:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR,
                                     "new data frame before the fragmented message ended")
            if rsv1 and self.deflate is None:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "RSV1 set but no extension negotiated")

    def _check_size(self, opcode: int, rsv1: bool, length: int) -> None:
        """Refuse a frame whose announced length alone overruns the limit,
        before buffering any of it."""
        compressed = rsv1 if opcode != Opcode.CONTINUATION else self._message_compressed
        limit = self.max_message_size
        if compressed:
            limit += limit // _DEFLATE_SLACK_RATIO + 64
        wire_total = length + (self._message_wire_size if opcode == Opcode.CONTINUATION else 0)
        if wire_total > limit:
            raise WebSocketError(CloseCode.MESSAGE_TOO_BIG,
                                 f"message over the {self.max_message_size}-byte limit")

    def _handle_frame(self, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> Optional[Event]:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode == Opcode.CLOSE:
            received = _parse_close_payload(payload)
            self.close_received = received
            if self.state == CLOSING:
                self.state = CLOSED
            return received
        if opcode != Opcode.CONTINUATION:
            self._message_opcode = opcode
            self._message_compressed = rsv1
            self._message_size = 0
            self._message_wire_size = 0
        self._message_wire_size += len(payload)
        if self._message_compressed:
            assert self.deflate is not None
            payload = self.deflate.decompress(payload, fin,
                                              self.max_message_size - self._message_size)
        self._message_size += len(payload)
        if self._message_size > self.max_message_size:
            raise WebSocketError(CloseCode.MESSAGE_TOO_BIG,
                                 f"message over the {self.max_message_size}-byte limit")
        if self._message_opcode == Opcode.TEXT:
            try:
                piece = self._utf8.decode(payload, fin)
            except UnicodeDecodeError:
                raise WebSocketError(CloseCode.INVALID_DATA, "text message is not UTF-8") from None
            if piece:
                self._pieces.append(piece)
        elif payload:
            self._pieces.append(payload)
        if not fin:
            return None
        text = self._message_opcode == Opcode.TEXT
        pieces = self._pieces
        self._pieces = []
        self._message_opcode = None
        if self.state != OPEN:
            return None  # data after this side's close frame is read and dropped (§5.5.1)
        if len(pieces) == 1:
            return Message(pieces[0])
        return Message("".join(pieces) if text else b"".join(pieces))

    # -- sending ---------------------------------------------------------------

    def _frame(self, opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
        return encode_frame(opcode, payload, rsv1=rsv1,
                            mask=os.urandom(4) if self.client else None)

    def send_message(self, data: Union[str, bytes, bytearray, memoryview]) -> bytes:
        """A data message (text for ``str``), compressed if negotiated."""
        if self.state != OPEN:
            raise RuntimeError(f"cannot send a message on a {self.state} WebSocket")
        if isinstance(data, str):
            opcode, payload = Opcode.TEXT, data.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, bytes(data)
        if self.deflate is not None:
            return self._frame(opcode, self.deflate.compress(payload), rsv1=True)
        return self._frame(opcode, payload)

    def send_ping(self, payload: bytes = b"") -> bytes:
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("a ping payload holds at most 125 bytes")
        return self._frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("a pong payload holds at most 125 bytes")
        return self._frame(Opcode.PONG, payload)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """This side's close frame (b"" if it was already sent). Answering
        the peer's close completes the handshake (state CLOSED)."""
        if self.close_sent is not None:
            return b""
        frame = self._frame(Opcode.CLOSE, _close_payload(code, reason))
        self.close_sent = code
        self.state = CLOSED if self.close_received is not None else CLOSING
        return frame


# --- the opening handshake ---------------------------------------------------------


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _tokens(values: Iterable[str]) -> list[str]:
    return [token.strip(" \t").lower() for value in values for token in value.split(",")
            if token.strip(" \t")]


Headers = Iterable[tuple[str, str]]


def _values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def is_upgrade_request(headers: Headers) -> bool:
    """Whether a request asks to become a WebSocket: ``Connection`` lists
    ``upgrade`` and ``Upgrade`` lists ``websocket`` (names lowercased, as
    the HTTP parser gives them)."""
    headers = list(headers)
    return ("upgrade" in _tokens(_values(headers, "connection"))
            and "websocket" in _tokens(_values(headers, "upgrade")))


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """What a valid upgrade request asks for."""

    key: str
    subprotocols: list[str]
    extensions: list[tuple[str, list[tuple[str, Optional[str]]]]]

    @property
    def accept(self) -> str:
        return accept_key(self.key)


_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def parse_upgrade_request(method: str, http_version: tuple[int, int],
                          headers: Headers) -> UpgradeRequest:
    """Check an upgrade request against RFC 6455 §4.2.1; HandshakeError
    (400, or 426 with the version this side speaks) if it fails."""
    headers = list(headers)
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake is a GET request")
    if http_version < (1, 1):
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if not is_upgrade_request(headers):
        raise HandshakeError(400, "missing Connection: upgrade or Upgrade: websocket")
    versions = _values(headers, "sec-websocket-version")
    if [version.strip() for version in versions] != ["13"]:
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version",
                             (("Sec-WebSocket-Version", "13"),))
    keys = _values(headers, "sec-websocket-key")
    if len(keys) != 1 or not _BASE64_KEY.fullmatch(keys[0].strip()):
        raise HandshakeError(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    subprotocols = [token.strip(" \t") for value in _values(headers, "sec-websocket-protocol")
                    for token in value.split(",") if token.strip(" \t")]
    try:
        extensions = parse_extensions(_values(headers, "sec-websocket-extensions"))
    except ValueError as error:
        raise HandshakeError(400, str(error)) from None
    return UpgradeRequest(keys[0].strip(), subprotocols, extensions)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_EXTENSION_PARAM = re.compile(
    rf"\s*({_TOKEN})\s*(?:=\s*(?:({_TOKEN})|\"((?:[^\"\\]|\\.)*)\"))?\s*")


def parse_extensions(values: Iterable[str]) -> list[tuple[str, list[tuple[str, Optional[str]]]]]:
    """Sec-WebSocket-Extensions fields (RFC 6455 §9.1) as
    ``[(name, [(param, value or None), ...]), ...]`` in offer order; names
    and parameters lowercased. ValueError on a malformed field."""
    offers = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            if not element.strip(" \t"):
                continue
            parts = _split_outside_quotes(element, ";")
            name = parts[0].strip(" \t")
            if not re.fullmatch(_TOKEN, name):
                raise ValueError(f"malformed extension {element.strip()[:64]!r}")
            params: list[tuple[str, Optional[str]]] = []
            for part in parts[1:]:
                match = _EXTENSION_PARAM.fullmatch(part)
                if match is None:
                    raise ValueError(f"malformed extension parameter {part.strip()[:64]!r}")
                param, token, quoted = match.groups()
                if quoted is not None:
                    token = re.sub(r"\\(.)", r"\1", quoted)
                    if not re.fullmatch(_TOKEN, token):  # §9.1: a quoted value is still a token
                        raise ValueError(f"malformed extension parameter {part.strip()[:64]!r}")
                params.append((param.lower(), token))
            offers.append((name.lower(), params))
    return offers


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError(f"unterminated quoted string in {text[:64]!r}")
    parts.append("".join(current))
    return parts
