"""The wire protocol without sockets: decoding, validation and encodings."""

import json

import msgpack
import pytest

from runcast.protocol import (
    MAX_FRAME_BYTES,
    Decide,
    ErrorCode,
    Event,
    ProtocolError,
    Subscribe,
    decode_frame,
    error_frame,
    make_event,
    parse_command,
)


def code_of(payload, encoding="json"):
    with pytest.raises(ProtocolError) as info:
        parse_command(decode_frame(payload, encoding))
    return info.value.code


@pytest.mark.parametrize(
    "payload, code",
    [
        ("{not json", ErrorCode.BAD_FRAME),
        ("[1, 2]", ErrorCode.BAD_FRAME),
        ('"hello"', ErrorCode.BAD_FRAME),
        ("{}", ErrorCode.BAD_REQUEST),
        ('{"type": 5}', ErrorCode.BAD_REQUEST),
        ('{"type": "launch_missiles"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "subscribe"}', ErrorCode.BAD_REQUEST),
        ('{"type": "subscribe", "run_id": 12}', ErrorCode.BAD_REQUEST),
        ('{"type": "subscribe", "run_id": "r", "since": "5"}', ErrorCode.BAD_REQUEST),
        ('{"type": "subscribe", "run_id": "r", "since": -1}', ErrorCode.BAD_REQUEST),
        ('{"type": "decide", "run_id": "r", "approval_id": "a", "decision": "maybe"}', ErrorCode.BAD_REQUEST),
        (
            '{"type": "decide", "run_id": "r", "approval_id": "a", "decision": "approve", "always": "yes"}',
            ErrorCode.BAD_REQUEST,
        ),
        ('{"type": "cancel", "run_id": "r", "mode": "later"}', ErrorCode.BAD_REQUEST),
        ('{"type": "start", "agent": "demo"}', ErrorCode.BAD_REQUEST),
        ("x" * (MAX_FRAME_BYTES + 1), ErrorCode.TOO_LARGE),
    ],
)
def test_bad_frames_get_stable_codes(payload, code):
    assert code_of(payload) == code


def test_bad_request_names_the_field_and_echoes_the_id():
    with pytest.raises(ProtocolError) as info:
        parse_command({"type": "subscribe", "run_id": "r", "since": "x", "id": "q1"})
    frame = error_frame(info.value)
    assert frame["code"] == "bad_request" and frame["id"] == "q1" and frame["field"] == "since"
    assert "since" in frame["message"]


def test_msgpack_frames_decode_like_json():
    payload = msgpack.packb({"type": "subscribe", "run_id": "run_1", "since": 3})
    cmd = parse_command(decode_frame(payload, "msgpack"))
    assert isinstance(cmd, Subscribe) and cmd.since == 3
    assert code_of(b"\xc1\xc1", "msgpack") == ErrorCode.BAD_FRAME
    assert code_of(msgpack.packb([1, 2]), "msgpack") == ErrorCode.BAD_FRAME


def test_decide_defaults():
    cmd = parse_command({"type": "decide", "run_id": "r", "approval_id": "a", "decision": "reject"})
    assert isinstance(cmd, Decide) and cmd.always is False and cmd.reason is None


def test_event_encodes_once_per_encoding_and_roundtrips():
    ev = make_event("run_1", 7, "message.delta", {"item_id": "m", "delta": "héllo"})
    assert ev.json_bytes() is ev.json_bytes()  # cached: the same bytes object, written to every JSON client
    assert ev.payload("json") is ev.json_bytes() and ev.payload("msgpack") is ev.packed()
    assert ev.packed() is ev.packed()
    assert json.loads(ev.json()) == msgpack.unpackb(ev.packed()) == ev.frame
    again = Event.unpack(ev.packed())
    assert again.seq == 7 and again.frame == ev.frame and again.packed() is ev.packed()
    assert ev.frame["ts"].endswith("Z")


def test_welcome_and_sync_carry_the_hubs_clock():
    import re
    from datetime import datetime, timezone

    from runcast.protocol import Sync, User, Welcome

    w = Welcome(connection_id="c", user=User(sub="a", name="A", roles=[]), server="s", heartbeat_s=20).model_dump()
    s = Sync(run_id="r", head_seq=0, status="paused").model_dump()
    for frame in (w, s):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["now"]), frame
        at = datetime.fromisoformat(frame["now"].replace("Z", "+00:00"))
        assert abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
