import orjson
import pytest

from worker import protocol
from worker.errors import ProtocolError
from worker.protocol import Command, Header, Message


def test_protocol_round_trips_every_field():
    message = Message(
        Header(Command.REPLY, "t1", "echo", 2, "r9", "succeeded", 12.5),
        reply_to=b"\x00web-1",
        payload=b'{"raw": true}',
    )

    frames = protocol.encode(message)

    assert len(frames) == 3
    assert protocol.decode(frames) == message


def test_protocol_keeps_payload_bytes_untouched():
    payload = b"\xff\x00 not json at all"
    frames = protocol.encode(
        Message(Header(Command.SUBMIT, "t", "n", 1, "r"), payload=payload)
    )

    assert frames[2] is payload
    assert protocol.decode(frames).payload == payload


def header(*fields):
    return orjson.dumps(list(fields))


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"x"], "expected 3 frames"),
        ([b"not json", b"", b""], "not JSON"),
        ([b'{"a": 1}', b"", b""], "version None"),
        ([header(1, "submit", "", "", 0, "", ""), b"", b""], "version 1"),
        ([header(99, "submit", "", "", 0, "", "", 0), b"", b""], "version 99"),
        ([header(2, "submit", "", "", 0, ""), b"", b""], "8-item array"),
        ([header(2, "explode", "", "", 0, "", "", 0), b"", b""], "unknown command"),
        ([header(2, "submit", 5, "", 0, "", "", 0), b"", b""], "strings"),
        ([header(2, "submit", "", "", "1", "", "", 0), b"", b""], "integer"),
        ([header(2, "submit", "", "", True, "", "", 0), b"", b""], "integer"),
        ([header(2, "submit", "", "", 1, "", "", "5"), b"", b""], "time_limit_s"),
    ],
)
def test_protocol_rejects_malformed_frames(frames, reason):
    with pytest.raises(ProtocolError, match=reason) as caught:
        protocol.decode(frames)

    assert caught.value.frames == frames
