"""The admin channel's framing, without sockets: requests cut from any split of the bytes, and
the error object for every kind of bad line."""

from __future__ import annotations

import json

from xmppd.protocol import adminwire as wire


def errors(events: list) -> list[dict]:
    return [json.loads(e.response)["error"] for e in events if isinstance(e, wire.BadRequest)]


def test_requests_split_anywhere_come_out_whole() -> None:
    data = b'{"id": 1, "command": "status"}\n\n{"id": "x", "command": "kick", "args": {"jid": "a@b"}}\n'
    for cut in range(len(data)):
        framing = wire.AdminFraming()
        events = framing.receive_data(data[:cut]) + framing.receive_data(data[cut:])
        assert events == [
            wire.Request(1, "status", {}),
            wire.Request("x", "kick", {"jid": "a@b"}),
        ]


def test_bad_lines_get_an_error_object_and_the_next_line_still_works() -> None:
    framing = wire.AdminFraming()
    lines = [b"{oops", b"[]", b'{"command": 3}', b'{"id": 4, "command": "x", "args": []}']
    events = framing.receive_data(b"\n".join(lines) + b'\n{"command": "status"}\n')
    assert [e["code"] for e in errors(events)] == ["bad-json", "bad-request", "bad-request",
                                                   "bad-request"]  # fmt: skip
    assert json.loads(events[3].response)["id"] == 4  # the id is echoed when there is one
    assert events[-1] == wire.Request(None, "status", {})


def test_a_line_over_the_limit_breaks_the_connection() -> None:
    framing = wire.AdminFraming(max_line=100)
    events = framing.receive_data(b'{"command": "' + b"x" * 200)
    assert [e["code"] for e in errors(events)] == ["too-big"]
    assert framing.broken and framing.receive_data(b'{"command": "status"}\n') == []
    short = wire.AdminFraming(max_line=10)
    assert [e["code"] for e in errors(short.receive_data(b'{"command": "status"}\n'))] == [
        "too-big"
    ]


def test_responses_are_one_line_each() -> None:
    assert wire.ok(1, {"a": "é\n"}) == b'{"id":1,"ok":true,"result":{"a":"\xc3\xa9\\n"}}\n'
    answer = json.loads(wire.error(None, "no-account", "no account x@y"))
    assert answer == {"id": None, "ok": False, "error": {"code": "no-account",
                                                          "message": "no account x@y"}}  # fmt: skip
