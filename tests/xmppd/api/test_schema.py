"""The request checker: each supported keyword refuses what it should, naming the field."""

from __future__ import annotations

import pytest

from xmppd.api.schema import COMPONENTS, Invalid, check, parse_time

SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 1, "maximum": 3},
        "when": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "enum": ["a", "b"]}},
        "maybe": {"type": ["string", "null"]},
        "config": {"$ref": "#/components/schemas/RoomConfig"},
    },
}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([], ""),
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "abcdef"}, "name"),
        ({"name": "AB"}, "name"),
        ({"name": "a", "count": 0}, "count"),
        ({"name": "a", "count": 1.5}, "count"),
        ({"name": "a", "count": True}, "count"),
        ({"name": "a", "when": "2026-12-31"}, "when"),
        ({"name": "a", "when": "2026-13-31T00:00:00Z"}, "when"),
        ({"name": "a", "tags": ["a", "b", "a"]}, "tags"),
        ({"name": "a", "tags": ["c"]}, "tags[0]"),
        ({"name": "a", "maybe": 1}, "maybe"),
        ({"name": "a", "extra": 1}, "extra"),
        ({"name": "a", "config": {"whois": "all"}}, "config.whois"),
    ],
)
def test_refusals_name_the_field(value: object, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        check(value, SCHEMA, COMPONENTS)
    assert caught.value.field == field


def test_valid_values_pass() -> None:
    value = {"name": "ab", "count": 3, "when": "2026-12-31T23:59:00+01:00", "tags": ["a"]}
    check({**value, "maybe": None, "config": {"name": "x", "public": False}}, SCHEMA, COMPONENTS)
    assert parse_time("2026-12-31T23:59:00+01:00").isoformat() == "2026-12-31T22:59:00+00:00"
