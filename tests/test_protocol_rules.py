"""The sans-I/O parts: return-value rules, lines mode, control framing."""

from __future__ import annotations

import pytest

from parallio._control import MessageReader, encode
from parallio._ref import ObjectRef
from parallio.protocol import LineSplitter, LineTooLong, ProtocolError, ProtocolSpec, to_buffers


def test_to_buffers_keeps_buffers_as_they_are():
    data = b"abc"
    assert to_buffers(data) is data
    array = bytearray(b"x")
    assert to_buffers(array) is array
    view = memoryview(b"y")
    assert to_buffers(view) is view


def test_to_buffers_encodes_str_and_flattens_tuples():
    assert to_buffers("é") == "é".encode()
    assert to_buffers((b"a", "b", None, (b"c", (b"d",)))) == [b"a", b"b", b"c", b"d"]
    assert to_buffers(()) == []


def test_to_buffers_accepts_subclasses():
    class Text(str):
        pass

    assert to_buffers(Text("t")) == b"t"


@pytest.mark.parametrize("value", [42, 1.5, {"a": 1}, object()])
def test_to_buffers_rejects_other_types(value):
    with pytest.raises(ProtocolError, match="return None, bytes"):
        to_buffers(value)


def test_line_splitter_handles_any_split():
    stream = b"one\r\ntwo\nthree\r\n"
    for cut in range(len(stream) + 1):
        splitter = LineSplitter()
        lines = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert lines == [b"one", b"two", b"three"]


def test_line_splitter_limits_line_length():
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"0123456789\n") == [b"0123456789"]
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 11)
    with pytest.raises(LineTooLong):
        LineSplitter(max_line=3).feed(b"abcd\n")


def test_protocol_spec_checks_lines_mode():
    class Broken:
        lines_mode = True

    with pytest.raises(ProtocolError, match="lines_received"):
        ProtocolSpec.of(Broken)
    with pytest.raises(ProtocolError, match="must be a class"):
        ProtocolSpec.of(object())


def test_object_ref_names_and_resolves():
    ref = ObjectRef.of(LineSplitter)
    assert ref.path == "parallio.protocol:LineSplitter"
    assert ObjectRef(ref.path).resolve() is LineSplitter
    with pytest.raises(ValueError, match="module:Name"):
        ObjectRef.of("no_colon")

    def local():
        pass

    with pytest.raises(ValueError, match="module level"):
        ObjectRef.of(local)


def test_object_ref_pickles_without_the_object():
    import pickle

    ref = pickle.loads(pickle.dumps(ObjectRef.of(LineSplitter)))
    assert ref.obj is None and ref.resolve() is LineSplitter


def test_message_reader_reassembles_split_messages():
    stream = encode(("a", 1)) + encode({"b": [2, 3]}) + encode("c" * 100000)
    for cut in (1, 3, 4, 5, 20, len(stream) - 1):
        reader = MessageReader()
        messages = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert messages == [("a", 1), {"b": [2, 3]}, "c" * 100000]
