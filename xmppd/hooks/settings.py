"""The `[hooks]` section (docs/config.md, docs/hooks.md)."""

from __future__ import annotations

from ..options import Option, Schema

SCHEMA: Schema = {
    "max_subscriptions": Option(int, 10000, "subscriptions the server keeps", min=0),
    "max_attempts": Option(int, 8, "delivery attempts before a dead letter", min=1),
    "retry_base": Option(float, 1.0, "seconds before the first retry (then doubled)", min=0.01),
    "retry_max": Option(float, 600.0, "longest wait between two attempts, seconds", min=0.01),
    "timeout": Option(float, 10.0, "seconds one delivery attempt may take", min=0.1),
    "per_target": Option(int, 4, "deliveries in flight to one target at once", min=1),
    "incoming_per_minute": Option(float, 60.0, "posts per minute per incoming webhook", min=0.1),
    "incoming_max_bytes": Option(int, 16384, "max bytes of an incoming webhook post", min=256),
}
