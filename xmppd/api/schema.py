"""The JSON Schema (2020-12) subset the API's requests are checked with, and the shared schemas.

The same schema objects go into the OpenAPI document (openapi.py), so what is checked is what
is published. Supported keywords: type (one or a list), properties, required,
additionalProperties (false), items, maxItems, enum, minLength, maxLength, pattern, minimum,
maximum, format date-time, $ref to `#/components/schemas/<name>`. Anything else in a schema
here is a bug, and `tests/xmppd/api/test_schema.py` checks none is used.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

Schema = dict[str, Any]
KNOWN = {
    "type", "properties", "required", "additionalProperties", "items", "maxItems", "enum",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "format", "$ref", "description",
    "example", "default",
}  # fmt: skip
_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


class Invalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or 'body'}: {message}")
        self.field = field
        self.message = message


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def parse_time(text: str) -> datetime:
    """RFC 3339 date-time (a `Z` or an offset required), as UTC."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text):
        raise ValueError("expected an RFC 3339 date-time such as 2026-12-31T23:59:00Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def check(value: Any, schema: Schema, components: dict[str, Schema], field: str = "") -> None:
    """Raise Invalid naming the first field that does not match."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rpartition("/")[2]]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            raise Invalid(field, f"expected {' or '.join(kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(field, f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        _string(value, schema, field)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise Invalid(field, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise Invalid(field, f"must be at most {schema['maximum']}")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise Invalid(field, f"at most {schema['maxItems']} items")
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), components, f"{field}[{i}]")
    elif isinstance(value, dict):
        _object(value, schema, components, field)


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _string(value: str, schema: Schema, field: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise Invalid(field, f"at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise Invalid(field, f"at most {schema['maxLength']} characters")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise Invalid(field, f"must match {schema['pattern']}")
    if schema.get("format") == "date-time":
        try:
            parse_time(value)
        except ValueError as exc:
            raise Invalid(field, str(exc)) from None


def _object(value: dict, schema: Schema, components: dict[str, Schema], field: str) -> None:
    properties = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            raise Invalid(_join(field, name), "is required")
    for name, item in value.items():
        if name in properties:
            check(item, properties[name], components, _join(field, name))
        elif schema.get("additionalProperties") is False:
            raise Invalid(_join(field, name), "unknown field")


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def used_keywords(schema: Any) -> set[str]:
    """Every keyword in a schema tree (properties' names excluded)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "properties":
                for sub in value.values():
                    found |= used_keywords(sub)
            elif key in ("items", "additionalProperties"):
                found |= used_keywords(value)
    return found


# ---- shared shapes --------------------------------------------------------------------------

JID_PATTERN = r"^[^@/\s]+@[^@/\s]+$"
TEXT = {"type": "string", "maxLength": 1024}
BODY = {"type": "string", "minLength": 1, "maxLength": 10000}
EVENT_NAME = {"type": "string", "pattern": r"^[a-z][a-z0-9_.:-]{0,63}$"}
STAMP = {"type": "string", "format": "date-time"}

COMPONENTS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "a word for programs"},
            "message": {"type": "string", "description": "a sentence for people"},
            "field": {"type": "string", "description": "the request field at fault (422)"},
        },
    },
    "Session": {
        "type": "object",
        "required": ["jid", "transport", "address", "since", "hibernating"],
        "properties": {
            "jid": {"type": "string"},
            "transport": {"type": "string", "enum": ["tcp", "websocket", "bosh", "channels"]},
            "address": {"type": "string"},
            "since": {"type": ["number", "null"], "description": "epoch seconds"},
            "hibernating": {"type": "boolean"},
        },
    },
    "Ban": {
        "type": "object",
        "required": ["id", "kind", "target", "room", "until", "reason", "by", "created"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string", "enum": ["account", "room", "ip"]},
            "target": {"type": "string", "description": "bare JID, or CIDR network for ip"},
            "room": {"type": ["string", "null"]},
            "until": {"type": ["string", "null"], "format": "date-time"},
            "reason": {"type": "string"},
            "by": {"type": "string", "description": "the API key (or admin) that set it"},
            "created": {"type": "string", "format": "date-time"},
        },
    },
    "User": {
        "type": "object",
        "required": ["jid", "role", "disabled", "sessions", "ban"],
        "properties": {
            "jid": {"type": "string"},
            "role": {
                "type": "string",
                "enum": ["admin", "user", "limited"],
                "description": "from [server] admins, [roles] and LDAP groups (docs/admin.md)",
            },
            "disabled": {"type": "boolean"},
            "sessions": {"type": "integer", "minimum": 0},
            "ban": {"type": ["object", "null"], "description": "the account's ban (a Ban)"},
        },
    },
    "RoomConfig": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "description": {"type": "string", "maxLength": 1000},
            "members_only": {"type": "boolean"},
            "public": {"type": "boolean"},
            "persistent": {"type": "boolean"},
            "moderated": {"type": "boolean"},
            "password": {"type": "string", "maxLength": 200},
            "whois": {"type": "string", "enum": ["moderators", "anyone"]},
        },
    },
    "Room": {
        "type": "object",
        "required": ["jid", "name", "occupants", "config", "subject"],
        "properties": {
            "jid": {"type": "string"},
            "name": {"type": "string"},
            "occupants": {"type": "integer", "minimum": 0},
            "subject": {"type": "string"},
            "config": {
                "type": "object",
                "required": ["name", "description", "members_only", "public", "persistent"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "members_only": {"type": "boolean"},
                    "public": {"type": "boolean"},
                    "persistent": {"type": "boolean"},
                    "moderated": {"type": "boolean"},
                    "password_protected": {"type": "boolean"},
                    "whois": {"type": "string"},
                },
            },
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "stamp", "from", "body"],
        "properties": {
            "id": {"type": "string", "description": "the room's archive id (stanza-id)"},
            "stamp": STAMP,
            "from": {"type": "string", "description": "the author's nick ('' for the room)"},
            "jid": {"type": "string", "description": "the author's real bare JID"},
            "body": {"type": "string"},
            "msg_id": {"type": "string"},
            "replace": {"type": "string"},
            "retracted": {"type": "object"},
            "retract": {"type": "string", "description": "the archive id this retracts"},
            "event": {"type": "object", "description": "a system event: {ev, data}"},
        },
    },
    "Post": {
        "type": "object",
        "additionalProperties": False,
        "description": "a text (`body`), a custom event (`ev` + `data`), or both",
        "properties": {
            "body": BODY,
            "ev": EVENT_NAME,
            "data": {"description": "any JSON value, the event's payload"},
        },
    },
}
