"""The sans-I/O WebSocket codec against cases written from RFC 6455 (the
ground the Autobahn testsuite covers: framing, pings and pongs, reserved
bits and opcodes, fragmentation, UTF-8, limits, close handling) and RFC 7692
(permessage-deflate and its negotiation). Section numbers in the test names
follow Autobahn's where one applies."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallio.http.websocket import (
    CLOSED,
    CLOSING,
    CloseCode,
    CloseReceived,
    HandshakeError,
    Message,
    Opcode,
    PerMessageDeflate,
    Ping,
    Pong,
    WebSocketConnection,
    WebSocketError,
    accept_key,
    apply_mask,
    encode_frame,
    is_upgrade_request,
    negotiate_deflate,
    parse_extensions,
    parse_upgrade_request,
)


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
          mask: bytes | None = b"\x37\xfa\x21\x3d") -> bytes:
    """A client frame, built by hand so tests can break any rule."""
    first = opcode | (0x80 if fin else 0) | rsv << 4
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def server(**kwargs) -> WebSocketConnection:
    return WebSocketConnection(**kwargs)


def feed(connection: WebSocketConnection, *chunks: bytes) -> list:
    events = []
    for data in chunks:
        connection.receive_data(data)
        events.extend(connection.events())
    return events


def fails(connection: WebSocketConnection, data: bytes, code: int) -> WebSocketError:
    connection.receive_data(data)
    with pytest.raises(WebSocketError) as info:
        list(connection.events())
    assert info.value.code == code, info.value
    with pytest.raises(WebSocketError):  # dead for good
        list(connection.events())
    return info.value


# --- 1.x framing, text and binary -----------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536, 1 << 20])
def test_1_1_text_and_1_2_binary_of_every_length_class(size):
    text = ("*" * size)
    data = os.urandom(size)
    assert feed(server(), frame(Opcode.TEXT, text.encode())) == [Message(text)]
    assert feed(server(), frame(Opcode.BINARY, data)) == [Message(data)]


def test_frames_split_at_every_byte():
    payload = "héllo wörld".encode()
    wire = frame(Opcode.TEXT, payload) + frame(Opcode.PING, b"p") + frame(Opcode.BINARY, b"\x00" * 300)
    connection = server()
    events = feed(connection, *[wire[i:i + 1] for i in range(len(wire))])
    assert events == [Message("héllo wörld"), Ping(b"p"), Message(b"\x00" * 300)]
    assert connection.buffered == 0


def test_many_frames_in_one_read():
    wire = b"".join(frame(Opcode.TEXT, str(i).encode()) for i in range(100))
    assert feed(server(), wire) == [Message(str(i)) for i in range(100)]


# --- 2.x pings and pongs -----------------------------------------------------------


def test_2_ping_and_pong_payloads_up_to_125_bytes():
    assert feed(server(), frame(Opcode.PING, b"")) == [Ping(b"")]
    assert feed(server(), frame(Opcode.PING, b"\xfe" * 125)) == [Ping(b"\xfe" * 125)]
    assert feed(server(), frame(Opcode.PONG, b"unsolicited")) == [Pong(b"unsolicited")]


def test_2_5_ping_payload_over_125_bytes_is_a_protocol_error():
    fails(server(), frame(Opcode.PING, b"x" * 126), CloseCode.PROTOCOL_ERROR)


def test_pong_answers_carry_the_ping_payload():
    connection = server()
    (ping,) = feed(connection, frame(Opcode.PING, b"abc"))
    assert connection.send_pong(ping.payload) == b"\x8a\x03abc"


# --- 3.x reserved bits, 4.x reserved opcodes -----------------------------------------


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_3_reserved_bits_without_an_extension(rsv):
    fails(server(), frame(Opcode.TEXT, b"x", rsv=rsv), CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_4_reserved_opcodes(opcode):
    fails(server(), frame(opcode, b"x"), CloseCode.PROTOCOL_ERROR)


def test_events_before_a_bad_frame_are_delivered_first():
    connection = server()
    connection.receive_data(frame(Opcode.TEXT, b"ok") + frame(5, b""))
    events = connection.events()
    assert next(events) == Message("ok")
    with pytest.raises(WebSocketError):
        next(events)


# --- masking ------------------------------------------------------------------------


def test_a_server_refuses_unmasked_frames():
    fails(server(), frame(Opcode.TEXT, b"x", mask=None), CloseCode.PROTOCOL_ERROR)


def test_a_client_refuses_masked_frames_and_masks_its_own():
    client = WebSocketConnection(client=True)
    fails(client, frame(Opcode.TEXT, b"x"), CloseCode.PROTOCOL_ERROR)
    client = WebSocketConnection(client=True)
    assert feed(client, frame(Opcode.TEXT, b"x", mask=None)) == [Message("x")]
    sent = client.send_message("hello")
    assert sent[1] & 0x80 and len(sent) == 2 + 4 + 5
    assert feed(server(), sent) == [Message("hello")]


def test_mask_is_an_involution():
    mask = os.urandom(4)
    for size in (0, 1, 3, 4, 5, 1000, 4097):
        data = os.urandom(size)
        masked = apply_mask(data, mask)
        assert apply_mask(masked, mask) == data
        assert masked == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


# --- 5.x fragmentation ------------------------------------------------------------------


def test_5_fragmented_text_and_binary():
    assert feed(server(), frame(Opcode.TEXT, b"frag", fin=False),
                frame(Opcode.CONTINUATION, b"men", fin=False),
                frame(Opcode.CONTINUATION, b"ted")) == [Message("fragmented")]
    assert feed(server(), frame(Opcode.BINARY, b"\x01", fin=False),
                frame(Opcode.CONTINUATION, b"\x02")) == [Message(b"\x01\x02")]


def test_5_1_fragmented_ping_is_a_protocol_error():
    fails(server(), frame(Opcode.PING, b"a", fin=False), CloseCode.PROTOCOL_ERROR)


def test_5_3_control_frames_inside_a_fragmented_message():
    events = feed(server(), frame(Opcode.TEXT, b"fra", fin=False), frame(Opcode.PING, b"1"),
                  frame(Opcode.CONTINUATION, b"gm", fin=False), frame(Opcode.PONG, b"2"),
                  frame(Opcode.CONTINUATION, b"ent"))
    assert events == [Ping(b"1"), Pong(b"2"), Message("fragment")]


def test_5_9_continuation_without_a_message():
    fails(server(), frame(Opcode.CONTINUATION, b"x"), CloseCode.PROTOCOL_ERROR)


def test_5_18_new_message_while_one_is_fragmented():
    fails(server(), frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.TEXT, b"b"),
          CloseCode.PROTOCOL_ERROR)


def test_5_close_inside_a_fragmented_message_is_honoured():
    connection = server()
    events = feed(connection, frame(Opcode.TEXT, b"a", fin=False),
                  frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert events == [CloseReceived(1000, "")]


# --- 6.x UTF-8 ----------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"\x80",
    b"\xe0\x80",  # truncated at the end of the message
]


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_6_invalid_utf8_in_a_text_message(payload):
    fails(server(), frame(Opcode.TEXT, payload), CloseCode.INVALID_DATA)


def test_6_4_invalid_utf8_fails_fast_in_the_first_fragment():
    connection = server()
    connection.receive_data(frame(Opcode.TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80", fin=False))
    with pytest.raises(WebSocketError) as info:
        list(connection.events())
    assert info.value.code == CloseCode.INVALID_DATA  # before the message ends


def test_6_2_valid_utf8_split_inside_code_points():
    text = "Hello-µ@ßöäüàá-UTF-8!! 𝄞"
    encoded = text.encode()
    for split in range(1, len(encoded)):
        events = feed(server(), frame(Opcode.TEXT, encoded[:split], fin=False),
                      frame(Opcode.CONTINUATION, encoded[split:]))
        assert events == [Message(text)]


def test_binary_messages_are_not_utf8_checked():
    assert feed(server(), frame(Opcode.BINARY, b"\xff\xfe")) == [Message(b"\xff\xfe")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=64))
def test_text_validation_matches_python_utf8(data, split):
    split = min(split, len(data))
    connection = server()
    connection.receive_data(frame(Opcode.TEXT, data[:split], fin=False)
                            + frame(Opcode.CONTINUATION, data[split:]))
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(WebSocketError) as info:
            list(connection.events())
        assert info.value.code == CloseCode.INVALID_DATA
    else:
        assert list(connection.events()) == [Message(expected)]


# --- 7.x close handling ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_7_7_valid_close_codes(code):
    connection = server()
    assert feed(connection, frame(Opcode.CLOSE, struct.pack("!H", code) + b"bye")) == [
        CloseReceived(code, "bye")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_7_9_invalid_close_codes(code):
    fails(server(), frame(Opcode.CLOSE, struct.pack("!H", code)), CloseCode.PROTOCOL_ERROR)


def test_7_3_close_payloads():
    assert feed(server(), frame(Opcode.CLOSE, b"")) == [CloseReceived(CloseCode.NO_STATUS, "")]
    fails(server(), frame(Opcode.CLOSE, b"\x03"), CloseCode.PROTOCOL_ERROR)
    fails(server(), frame(Opcode.CLOSE, b"\x03\xe8" + b"x" * 124), CloseCode.PROTOCOL_ERROR)
    fails(server(), frame(Opcode.CLOSE, b"\x03\xe8\xff"), CloseCode.INVALID_DATA)


def test_7_1_close_handshake_answered_by_the_server():
    connection = server()
    (received,) = feed(connection, frame(Opcode.CLOSE, struct.pack("!H", 1001) + b"away"))
    reply = connection.close(received.code)
    assert reply == b"\x88\x02\x03\xe9"
    assert connection.state == CLOSED
    assert connection.close() == b""  # only once
    # Nothing after a close frame is an event.
    assert feed(connection, frame(Opcode.TEXT, b"late")) == []


def test_7_1_server_initiated_close_drops_data_until_the_answer():
    connection = server()
    assert connection.close(1000, "done") == b"\x88\x06\x03\xe8done"
    assert connection.state == CLOSING
    with pytest.raises(RuntimeError):
        connection.send_message("too late")
    events = feed(connection, frame(Opcode.TEXT, b"in flight"), frame(Opcode.CLOSE, b"\x03\xe8"))
    assert events == [CloseReceived(1000, "")]
    assert connection.state == CLOSED


def test_close_refuses_codes_that_may_not_be_sent():
    with pytest.raises(ValueError):
        server().close(1006)
    with pytest.raises(ValueError):
        server().close(1000, "x" * 124)


# --- 9.x limits --------------------------------------------------------------------------------


def test_oversize_frame_is_refused_from_its_header_alone():
    connection = server(max_message_size=1000)
    header_only = frame(Opcode.BINARY, b"\x00" * 1001)[:8]
    error = fails(connection, header_only, CloseCode.MESSAGE_TOO_BIG)
    assert "1000" in error.reason


def test_oversize_fragmented_message_is_refused():
    connection = server(max_message_size=1000)
    connection.receive_data(frame(Opcode.TEXT, b"a" * 600, fin=False))
    assert list(connection.events()) == []
    fails(connection, frame(Opcode.CONTINUATION, b"a" * 401)[:8], CloseCode.MESSAGE_TOO_BIG)


def test_message_of_exactly_the_limit_passes():
    assert feed(server(max_message_size=1000), frame(Opcode.BINARY, b"a" * 1000)) == [
        Message(b"a" * 1000)]


def test_64_bit_length_with_top_bit_set():
    bad = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0"
    fails(server(), bad, CloseCode.PROTOCOL_ERROR)


# --- writer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_frame_uses_the_minimal_length_form(size):
    encoded = encode_frame(Opcode.BINARY, b"x" * size)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(encoded) == header + size
    client = WebSocketConnection(client=True)
    assert feed(client, encoded) == [Message(b"x" * size)]


def test_send_message_text_and_binary():
    connection = server()
    assert connection.send_message("hé") == b"\x81\x03h\xc3\xa9"
    assert connection.send_message(b"\x00") == b"\x82\x01\x00"
    assert connection.send_ping(b"p") == b"\x89\x01p"


# --- permessage-deflate (RFC 7692, Autobahn 12.x/13.x) ---------------------------------------------


def deflate_pair(**kwargs) -> tuple[WebSocketConnection, WebSocketConnection]:
    """A client and a server with the same negotiated parameters."""
    response, server_deflate = negotiate_deflate(
        parse_extensions(["permessage-deflate; client_max_window_bits"]), **kwargs)
    params = dict(parse_extensions([response])[0][1])
    client_deflate = PerMessageDeflate(
        local_no_context_takeover="client_no_context_takeover" in params,
        remote_no_context_takeover="server_no_context_takeover" in params,
        local_max_window_bits=int(params.get("client_max_window_bits") or 15),
        remote_max_window_bits=int(params.get("server_max_window_bits") or 15))
    return (WebSocketConnection(client=True, deflate=client_deflate),
            WebSocketConnection(deflate=server_deflate))


@pytest.mark.parametrize("no_context", [False, True])
def test_12_compressed_messages_both_ways(no_context):
    client, srv = deflate_pair(server_no_context_takeover=no_context,
                               client_no_context_takeover=no_context)
    messages = ["hello " * 50, b"\x00" * 10000, "", os.urandom(3000), "again " * 50]
    for message in messages:
        wire = client.send_message(message)
        assert wire[0] & 0x40  # RSV1: compressed
        assert feed(srv, wire) == [Message(message)]
        assert feed(client, srv.send_message(message)) == [Message(message)]


def test_context_takeover_makes_repeats_smaller():
    _, with_context = deflate_pair()
    _, without = deflate_pair(server_no_context_takeover=True)
    text = "the same sentence, again and again. " * 20
    with_context.send_message(text)
    without.send_message(text)
    assert len(with_context.send_message(text)) < len(without.send_message(text))


def test_13_fragmented_compressed_message():
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(b"fragmented and compressed " * 40) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    _, srv = deflate_pair()
    third = len(data) // 3
    events = feed(srv, frame(Opcode.TEXT, data[:third], fin=False, rsv=4),
                  frame(Opcode.PING, b"mid"),
                  frame(Opcode.CONTINUATION, data[third:2 * third], fin=False),
                  frame(Opcode.CONTINUATION, data[2 * third:]))
    assert events == [Ping(b"mid"), Message("fragmented and compressed " * 40)]


def test_uncompressed_message_on_a_deflate_connection():
    _, srv = deflate_pair()
    assert feed(srv, frame(Opcode.TEXT, b"plain")) == [Message("plain")]


def test_rsv1_on_continuation_or_control_frames():
    _, srv = deflate_pair()
    fails(srv, frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONTINUATION, b"b", rsv=4),
          CloseCode.PROTOCOL_ERROR)
    _, srv = deflate_pair()
    fails(srv, frame(Opcode.PING, b"", rsv=4), CloseCode.PROTOCOL_ERROR)


def test_deflate_bomb_is_stopped_at_the_limit():
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(b"\x00" * (10 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    _, srv = deflate_pair()
    srv.max_message_size = 1 << 16
    assert len(bomb) < 1 << 16
    fails(srv, frame(Opcode.BINARY, bomb[:-4], rsv=4), CloseCode.MESSAGE_TOO_BIG)


def test_corrupt_deflate_data():
    _, srv = deflate_pair()
    fails(srv, frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv=4), CloseCode.INVALID_DATA)


# --- negotiation ------------------------------------------------------------------------------------


def negotiated(header: str, **kwargs):
    result = negotiate_deflate(parse_extensions([header]), **kwargs)
    return None if result is None else result[0]


def test_negotiation_accepts_the_first_acceptable_offer():
    assert negotiated("permessage-deflate") == "permessage-deflate"
    assert negotiated("x-webkit-deflate-frame, permessage-deflate") == "permessage-deflate"
    assert negotiated("permessage-deflate; server_max_window_bits=20, permessage-deflate; "
                      "server_no_context_takeover") == "permessage-deflate; server_no_context_takeover"


def test_negotiation_parameters():
    assert negotiated("permessage-deflate; server_max_window_bits=10") == (
        "permessage-deflate; server_max_window_bits=10")
    assert negotiated('permessage-deflate; client_max_window_bits="12"') == (
        "permessage-deflate; client_max_window_bits=12")
    assert negotiated("permessage-deflate; client_max_window_bits",
                      client_no_context_takeover=True) == (
        "permessage-deflate; client_no_context_takeover")


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=8",  # zlib cannot
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=09",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "other-extension",
])
def test_negotiation_declines(offer):
    assert negotiated(offer) is None


def test_parse_extensions_grammar():
    assert parse_extensions(['foo, bar; baz=2;qux="quoted"', "Permessage-Deflate"]) == [
        ("foo", []), ("bar", [("baz", "2"), ("qux", "quoted")]), ("permessage-deflate", [])]
    for bad in ['foo; "x"', 'foo; x="unterminated', "f@o", 'foo; x="not token"']:
        with pytest.raises(ValueError):
            parse_extensions([bad])


# --- handshake ----------------------------------------------------------------------------------------

UPGRADE = [("host", "example.com"), ("upgrade", "websocket"), ("connection", "keep-alive, Upgrade"),
           ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13")]


def test_accept_key_matches_rfc_6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_upgrade_request():
    request = parse_upgrade_request("GET", (1, 1), UPGRADE + [
        ("sec-websocket-protocol", "chat, superchat"), ("sec-websocket-protocol", "v3"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")])
    assert request.accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert request.subprotocols == ["chat", "superchat", "v3"]
    assert request.extensions == [("permessage-deflate", [("client_max_window_bits", None)])]
    assert is_upgrade_request(UPGRADE)
    assert not is_upgrade_request([("upgrade", "websocket")])


def replace(headers, name, value):
    return [(k, v) for k, v in headers if k != name] + ([(name, value)] if value is not None else [])


@pytest.mark.parametrize("method, version, headers, status", [
    ("POST", (1, 1), UPGRADE, 400),
    ("GET", (1, 0), UPGRADE, 400),
    ("GET", (1, 1), replace(UPGRADE, "upgrade", None), 400),
    ("GET", (1, 1), replace(UPGRADE, "sec-websocket-version", "8"), 426),
    ("GET", (1, 1), replace(UPGRADE, "sec-websocket-version", None), 426),
    ("GET", (1, 1), replace(UPGRADE, "sec-websocket-key", None), 400),
    ("GET", (1, 1), replace(UPGRADE, "sec-websocket-key", "c2hvcnQ="), 400),
    ("GET", (1, 1), UPGRADE + [("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")], 400),
    ("GET", (1, 1), UPGRADE + [("sec-websocket-extensions", 'x; y="')], 400),
])
def test_upgrade_request_refusals(method, version, headers, status):
    with pytest.raises(HandshakeError) as info:
        parse_upgrade_request(method, version, headers)
    assert info.value.status == status
    if status == 426:
        assert info.value.headers == (("Sec-WebSocket-Version", "13"),)
