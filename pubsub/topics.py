"""Topic names shared by the XMPP core, the JSON channels and the Tracker.

A topic is ``"<kind>:<id>"``. Kinds never contain ``:``; ids may (a resource can), so
parsing splits at the first colon only. JIDs must already be normalised (stringprep'd)
by the caller: topics compare as plain strings.
"""

from __future__ import annotations

__all__ = [
    "USER",
    "SESSION",
    "ROOM",
    "PRESENCE",
    "TRACKER",
    "user_topic",
    "session_topic",
    "room_topic",
    "presence_topic",
    "tracker_topic",
    "parse_topic",
]

USER = "user"  # every session of one bare JID (one key per bare JID in the Tracker)
SESSION = "session"  # exactly one bound resource
ROOM = "room"  # a MUC room (occupants subscribe)
PRESENCE = "presence"  # presence of every user on one virtual host
TRACKER = "tracker"  # Tracker gossip between nodes (internal)


def user_topic(bare_jid: str) -> str:
    return "user:" + bare_jid


def session_topic(full_jid: str) -> str:
    return "session:" + full_jid


def room_topic(room_jid: str) -> str:
    return "room:" + room_jid


def presence_topic(host: str) -> str:
    return "presence:" + host


def tracker_topic(name: str) -> str:
    return "tracker:" + name


def parse_topic(topic: str) -> tuple[str, str]:
    """Split ``"kind:id"`` into ``(kind, id)``; ValueError if there is no kind."""
    kind, sep, ident = topic.partition(":")
    if not sep or not kind:
        raise ValueError(f"not a topic: {topic!r}")
    return kind, ident
