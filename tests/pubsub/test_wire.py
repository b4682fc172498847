import json

import pytest

from pubsub.bus import PubSub
from pubsub.wire import Envelope


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload: object) -> bytes:
        self.calls += 1
        return json.dumps(payload).encode()


class WireSession:
    """A subscriber that writes the envelope in its transport's format."""

    def __init__(self, fmt: str, encoder: Counting) -> None:
        self.fmt = fmt
        self.encoder = encoder
        self.out: list[bytes] = []

    def deliver(self, topic: str, message: object) -> None:
        assert isinstance(message, Envelope)
        self.out.append(message.encoded(self.fmt, self.encoder))


def test_envelope_encodes_once_for_n_subscribers():
    bus = PubSub()
    json_enc, xml_enc = Counting(), Counting()
    sessions = [WireSession("json", json_enc) for _ in range(50)]
    sessions += [WireSession("xml", xml_enc) for _ in range(30)]
    for s in sessions:
        bus.subscribe("room:r", s)
    env = Envelope({"body": "hello"})
    assert bus.broadcast("room:r", env) == 80
    assert json_enc.calls == 1
    assert xml_enc.calls == 1
    assert {s.out[0] for s in sessions} == {b'{"body": "hello"}'}
    # All subscribers of one format share the very same bytes object.
    assert len({id(s.out[0]) for s in sessions if s.fmt == "json"}) == 1


def test_envelope_caches_many_formats():
    env = Envelope("x")
    encs = {fmt: Counting() for fmt in ("a", "b", "c")}
    for _ in range(3):
        for fmt, enc in encs.items():
            assert env.encoded(fmt, enc) == b'"x"'
    assert [e.calls for e in encs.values()] == [1, 1, 1]
    assert env.cached_formats() == ("a", "b", "c")
    assert env.payload == "x"


def test_encoder_error_is_not_cached():
    env = Envelope(object())
    enc = Counting()
    for _ in range(2):
        with pytest.raises(TypeError):
            env.encoded("json", enc)
    assert enc.calls == 2
    assert env.cached_formats() == ()
