import pytest

from escore.envelope import Envelope, EnvelopeError, decode, encode_record, new_id, utc_now

pytestmark = pytest.mark.unit


def make(**over):
    base = dict(
        event_id=new_id(), stream_id="post-1", version=1, type="PostCreated", schema_version=1,
        service="posts", occurred_at=utc_now(), data={"text": "hi"}, metadata={"correlation_id": "c"},
    )
    base.update(over)
    return Envelope(**base)


def test_record_is_compact_json_and_one_newline_and_round_trips():
    event = make()
    raw = encode_record(event)
    assert raw.endswith(b"}\n") and b"\n" not in raw[:-1] and b": " not in raw
    assert decode(raw) == event


def test_unknown_fields_survive_a_round_trip():
    raw = encode_record(make()).replace(b'{"', b'{"added_later":7,"', 1)
    assert b'"added_later":7' in encode_record(decode(raw))


@pytest.mark.parametrize(
    "bad",
    [b"not json", b"[]", b'{"event_id": "x"}', encode_record(make(version=1)).replace(b'"version":1', b'"version":0')],
)
def test_bad_input_is_an_envelope_error(bad):
    with pytest.raises(EnvelopeError):
        decode(bad)


def test_timestamps_are_utc_with_microseconds():
    ts = utc_now()
    assert ts.endswith("Z") and len(ts.split(".")[1]) == 7
