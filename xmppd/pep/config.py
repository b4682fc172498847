"""PEP node configuration (XEP-0060 §8.2, XEP-0163 §4 defaults) and its data forms.

A configuration is a plain dict keyed by the field name without the `pubsub#` prefix. Values
are normalised (booleans as bool, `max_items` as an int clamped to the server's limit, "max"
meaning that limit), so publish-options preconditions (§7.1.5) compare normalised values.
"""

from __future__ import annotations

from typing import Any

from ..protocol import namespaces as ns
from ..protocol.forms import Field, FormError, build
from ..protocol.stanza import Element

Config = dict[str, Any]

ACCESS_MODELS = ("open", "presence", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
BOOLEANS = ("persist_items", "notify_retract", "notify_delete", "deliver_payloads")
DEFAULTS: Config = {
    "access_model": "presence",  # XEP-0163 §4.4: the default for PEP
    "persist_items": True,
    "max_items": 1,
    "send_last_published_item": "on_sub_and_presence",
    "notify_retract": True,
    "notify_delete": True,
    "deliver_payloads": True,
    "title": "",
}


def default(limit: int) -> Config:
    return {**DEFAULTS, "max_items": min(DEFAULTS["max_items"], limit)}


def parse_value(key: str, values: list[str], limit: int) -> Any:
    """One submitted field, normalised; FormError when the value is not acceptable."""
    value = values[0] if len(values) == 1 else None
    if value is None and key != "title":
        raise FormError(f"pubsub#{key} takes one value")
    if key == "access_model":
        if value not in ACCESS_MODELS:
            raise FormError(f"unsupported access model {value!r}")
        return value
    if key == "send_last_published_item":
        if value not in SEND_LAST:
            raise FormError(f"unsupported send_last_published_item {value!r}")
        return value
    if key in BOOLEANS:
        if value in ("1", "true"):
            return True
        if value in ("0", "false"):
            return False
        raise FormError(f"pubsub#{key} must be a boolean")
    if key == "max_items":
        if value == "max":
            return limit
        if value is None or not value.isdigit() or int(value) < 1:
            raise FormError("pubsub#max_items must be a positive integer or 'max'")
        return min(int(value), limit)
    if key == "title":
        return "".join(values)[:256]
    raise FormError(f"unsupported option pubsub#{key}")


def parse_options(fields: dict[str, list[str]], limit: int) -> Config:
    """Submitted `pubsub#...` fields as a normalised partial configuration."""
    options: Config = {}
    for var, values in fields.items():
        if not var.startswith("pubsub#"):
            raise FormError(f"unsupported option {var}")
        key = var.removeprefix("pubsub#")
        if key not in DEFAULTS:
            raise FormError(f"unsupported option {var}")
        options[key] = parse_value(key, values, limit)
    return options


def unmet(config: Config, options: Config) -> str | None:
    """The first publish-option the node's configuration does not satisfy, or None."""
    for key, value in options.items():
        if config.get(key, DEFAULTS[key]) != value:
            return f"pubsub#{key}"
    return None


def form(config: Config, limit: int) -> Element:
    """The node configuration form (XEP-0060 §8.2.4)."""

    def boolean(key: str, label: str) -> Field:
        return Field(f"pubsub#{key}", "boolean", label, ["1" if config[key] else "0"])

    fields = [
        Field(
            "pubsub#access_model",
            "list-single",
            "Who may subscribe and retrieve items",
            [config["access_model"]],
            options=[("", m) for m in ACCESS_MODELS],
        ),
        boolean("persist_items", "Persist items to storage"),
        Field(
            "pubsub#max_items",
            "text-single",
            f"Max number of items to persist (at most {limit})",
            [str(config["max_items"])],
        ),
        Field(
            "pubsub#send_last_published_item",
            "list-single",
            "When to send the last published item",
            [config["send_last_published_item"]],
            options=[("", m) for m in SEND_LAST],
        ),
        boolean("notify_retract", "Notify subscribers when items are removed"),
        boolean("notify_delete", "Notify subscribers when the node is deleted"),
        boolean("deliver_payloads", "Deliver payloads with event notifications"),
        Field("pubsub#title", "text-single", "A friendly name for the node", [config["title"]]),
    ]
    return build(ns.PUBSUB_NODE_CONFIG, fields)
