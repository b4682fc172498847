"""The Phoenix V2 channel protocol core, without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from lxml import etree

from xmppd.protocol.channels import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    ChannelProtocol,
    Frame,
    FrameError,
    Join,
    Leave,
    Push,
    decode,
    encode,
)


def frames(proto: ChannelProtocol) -> list[list]:
    return [json.loads(text) for text in proto.frames_to_send()]


def test_decode_and_encode_round_trip() -> None:
    text = '["1","2","room:a@b","new_msg",{"body":"hé"}]'
    frame = decode(text)
    assert frame == Frame("1", "2", "room:a@b", "new_msg", {"body": "hé"})
    assert decode(encode(frame)) == frame


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        "[1,2,3,4]",
        '[1,"2","t","e",{}]',
        '[null,"2","","e",{}]',
        '[null,"2","t","",{}]',
        '[null,"2","t","e",[]]',
        '[null,"2","t","e","x"]',
        '[null,"' + "x" * 65 + '","t","e",{}]',
        '[null,"2","' + "t" * 4000 + '","e",{}]',
    ],
)
def test_bad_frames_are_refused(text: str) -> None:
    with pytest.raises(FrameError):
        decode(text)
    with pytest.raises(FrameError):
        ChannelProtocol().receive(text)


def nested(levels: int, kind: str) -> str:
    """A frame with `levels` levels of arrays/objects, the frame and its payload included."""
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    if kind == "{":
        inner = '{"a":' * (levels - 2) + "1" + "}" * (levels - 2)
    return '[null,"1","t","e",{"x":' + inner + "}]"


@pytest.mark.parametrize("kind", ["[", "{"])
def test_nesting_is_bounded_before_json_recurses(kind: str) -> None:
    """Issue 18.3: 100,000 levels used to raise RecursionError out of the decoder."""
    assert decode(nested(MAX_DEPTH, kind)).payload  # the deepest frame allowed
    for levels in (MAX_DEPTH + 1, 3000, 100_000):
        with pytest.raises(FrameError, match="nested deeper|arrays and objects"):
            decode(nested(levels, kind))
    with pytest.raises(FrameError):
        decode("[" * 100_000)  # unbalanced and deep: never reaches json


def test_brackets_in_strings_do_not_count() -> None:
    body = '[[[{{"\\' * 1000 + "]]]}}" * 1000  # brackets, quotes and backslashes
    frame = decode(json.dumps([None, "1", "t", "e", {"body": body, "l": [[1], [2]] * 100}]))
    assert frame.payload["body"] == body
    tricky = '\\"' + "[" * 40  # an escaped backslash, then an escaped quote
    assert decode(json.dumps([None, "1", "t", "e", {"a": tricky}])).payload["a"] == tricky
    with pytest.raises(FrameError, match=f"more than {MAX_CONTAINERS}"):
        decode(json.dumps([None, "1", "t", "e", {"l": [[]] * MAX_CONTAINERS}]))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(constant: str) -> None:
    with pytest.raises(FrameError, match=constant):
        decode('[null,"1","t","e",{"x":' + constant + "}]")


def test_invalid_utf8_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="UTF-8"):
        decode(b'[null,"1","t","e",{"x":"\xff"}]')


@pytest.mark.parametrize(
    "string",
    ["\x01", "\b", "\x0c", "\x1f", "\ufffe", "\uffff", "\ud800", "\udc00", "a\\\ud83d"],
)
def test_strings_xml_cannot_carry_are_frame_errors(string: str) -> None:
    """A body with U+0001 or a lone surrogate used to end the session with a traceback where
    lxml (or UTF-8 encoding) refused it; now the frame is refused like any bad frame."""
    for ascii_only in (True, False):
        text = json.dumps([None, "1", "t", "e", {"body": string}], ensure_ascii=ascii_only)
        if not ascii_only and any("\ud800" <= c <= "\udfff" for c in string):
            continue  # a str decoded from UTF-8 (the wire) never holds a raw surrogate
        with pytest.raises(FrameError, match="XML cannot carry"):
            decode(text)


def _xml_can_carry(string: str) -> bool:
    try:
        element = etree.Element("body")
        element.text = string
        etree.tostring(element, encoding="utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


@given(
    st.lists(
        st.one_of(
            st.characters(exclude_categories=()),
            st.sampled_from(["\\", "\\u", "\ud83d", "\ude00", "\\ud800", "u"]),
        ),
        max_size=12,
    ).map("".join),
    st.booleans(),
)
def test_the_character_check_agrees_with_lxml(string: str, ascii_only: bool) -> None:
    if not ascii_only:
        assume(not any("\ud800" <= c <= "\udfff" for c in string))
    text = json.dumps([None, "1", "t", "e", {"body": string}], ensure_ascii=ascii_only)
    try:
        accepted = decode(text).payload["body"] == string
    except FrameError:
        accepted = False
    assert accepted == _xml_can_carry(string)


def test_heartbeat_is_answered_on_the_phoenix_topic() -> None:
    proto = ChannelProtocol()
    assert proto.receive('[null,"7","phoenix","heartbeat",{}]') == []
    assert frames(proto) == [[None, "7", "phoenix", "phx_reply", {"status": "ok", "response": {}}]]


def test_join_push_reply_and_leave() -> None:
    proto = ChannelProtocol()
    [join] = proto.receive('["1","1","room:r@c","phx_join",{"nick":"n"}]')
    assert join == Join("room:r@c", "1", {"nick": "n"})
    proto.accept(join, {"nick": "n"})
    assert proto.push("room:r@c", "presence_state", {})
    assert frames(proto) == [
        ["1", "1", "room:r@c", "phx_reply", {"status": "ok", "response": {"nick": "n"}}],
        ["1", None, "room:r@c", "presence_state", {}],
    ]
    [push] = proto.receive('["1","2","room:r@c","new_msg",{"body":"x"}]')
    assert push == Push("room:r@c", "new_msg", "2", "1", {"body": "x"})
    [leave] = proto.receive('["1","3","room:r@c","phx_leave",{}]')
    assert leave == Leave("room:r@c", "1", "3")
    proto.left(leave)
    assert frames(proto) == [
        ["1", "3", "room:r@c", "phx_reply", {"status": "ok", "response": {}}],
        ["1", "1", "room:r@c", "phx_close", {}],
    ]
    assert not proto.push("room:r@c", "new_msg", {})


def test_push_to_a_topic_not_joined_is_an_unmatched_topic() -> None:
    proto = ChannelProtocol()
    assert proto.receive('["9","4","room:x@c","new_msg",{}]') == []
    reply = frames(proto)[0]
    assert reply[1] == "4" and reply[3] == "phx_reply"
    assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}


def test_stale_join_ref_and_reserved_events_are_refused() -> None:
    proto = ChannelProtocol()
    proto.receive('["1","1","user:a@b","phx_join",{}]')
    proto.frames_to_send()
    assert proto.receive('["old","2","user:a@b","new_msg",{}]') == []
    assert frames(proto)[0][4]["response"] == {"reason": "unmatched topic"}
    assert proto.receive('["1","3","user:a@b","phx_reply",{}]') == []
    assert frames(proto)[0][4]["response"] == {"reason": "reserved event"}


def test_a_duplicate_join_closes_the_old_channel_first() -> None:
    proto = ChannelProtocol()
    proto.receive('["1","1","room:r@c","phx_join",{}]')
    events = proto.receive('["5","5","room:r@c","phx_join",{}]')
    assert events == [Leave("room:r@c", "1", None), Join("room:r@c", "5", {})]
    assert frames(proto) == [["1", "1", "room:r@c", "phx_close", {}]]
    assert proto.joined == {"room:r@c": "5"}


def test_refused_join_and_the_channel_limit() -> None:
    proto = ChannelProtocol(max_channels=1)
    [join] = proto.receive('["1","1","room:r@c","phx_join",{}]')
    proto.refuse(join, "forbidden")
    assert frames(proto) == [
        [
            "1",
            "1",
            "room:r@c",
            "phx_reply",
            {"status": "error", "response": {"reason": "forbidden"}},
        ]
    ]
    assert proto.joined == {}
    proto.receive('["2","2","room:a@c","phx_join",{}]')
    assert proto.receive('["3","3","room:b@c","phx_join",{}]') == []
    assert frames(proto)[0][4]["status"] == "error"


def test_server_side_close_and_error() -> None:
    proto = ChannelProtocol()
    proto.receive('["1","1","room:r@c","phx_join",{}]')
    proto.frames_to_send()
    proto.close("room:r@c", error=True)
    assert frames(proto) == [["1", "1", "room:r@c", "phx_error", {}]]
    assert proto.joined == {}
