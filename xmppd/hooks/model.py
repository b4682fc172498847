"""A subscription: which source, which event types, which filter, delivered by which provider
to which target; and the matcher that runs one pass per event over an index of them.

Filters are compiled once, when a subscription is created or loaded: keywords (whole words),
patterns and `#tags` become one case-insensitive regular expression; sender and room are
lookups.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

SOURCES = ("room", "rooms", "user", "accounts")  # one room, all rooms, 1:1 with the bot, accounts
EVENT_TYPES = (
    "message", "join", "leave", "retraction", "room-created", "room-destroyed",
    "account-created", "account-deleted", "account-banned",
)  # fmt: skip
PROVIDERS = ("webhook", "slack", "matrix", "telegram", "xmpp")
MODES = ("watch", "follow", "mute")  # follow: only messages that start a thread
MAX_PATTERN = 512


class SubscriptionError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(slots=True)
class Event:
    """One thing that happened, as the matcher and the providers see it."""

    id: str  # stable: the room's stanza-id for messages; the idempotency key starts with it
    type: str  # one of EVENT_TYPES
    source: str  # "room" events carry the room JID in `room`; "user"/"accounts" the account
    room: str | None = None
    sender: str | None = None  # bare JID of the author
    nick: str | None = None
    text: str = ""
    thread: str | None = None  # XEP-0201 thread of a message
    starts_thread: bool = True
    removal: str | None = None  # a `leave` that was a kick, ban, affiliation or members-only
    until: float | None = None  # the end of an `account-banned` (None: until lifted)
    time: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Subscription:
    id: str
    source: str
    events: list[str]
    provider: str
    target: dict[str, Any]  # provider-specific: url, room_id + token, chat_id + token, jid
    room: str | None = None  # the room of source "room"
    user: str | None = None  # the account of source "user" (or the owner of a user sub)
    keywords: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)  # regular expressions
    tags: list[str] = field(default_factory=list)  # "#deploy" in message text
    senders: list[str] = field(default_factory=list)
    mode: str = "watch"
    owner: str = ""  # who made it: an API key name or a JID (slash commands)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # webhook HMAC
    created: float = field(default_factory=time.time)
    _text: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check(self)
        self._text = _compile(self)

    def document(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_text")
        return out

    def public(self) -> dict[str, Any]:
        """What the API shows: secrets of targets are masked, the HMAC secret is shown (its
        owner needs it to verify signatures)."""
        out = self.document()
        out["target"] = {
            k: ("***" if k in ("token", "access_token") else v) for k, v in self.target.items()
        }
        return out

    def accepts(self, event: Event) -> bool:
        """The filter: every given criterion must hold (keywords/patterns/tags: any of them)."""
        return self.passes(event) and (
            self._text is None or self._text.search(event.text) is not None
        )

    def passes(self, event: Event) -> bool:
        """Everything but the text: mode and sender."""
        if self.mode == "mute":
            return False
        if self.mode == "follow" and not event.starts_thread:
            return False
        return not self.senders or event.sender in self.senders


def from_document(doc: dict[str, Any]) -> Subscription:
    known = {k: v for k, v in doc.items() if k in Subscription.__dataclass_fields__}
    return Subscription(**known)


def check(sub: Subscription) -> None:
    if sub.source not in SOURCES:
        raise SubscriptionError("source", f"source is one of {', '.join(SOURCES)}")
    if sub.source == "room" and not sub.room:
        raise SubscriptionError("room", "a room subscription names the room")
    if sub.source == "user" and not sub.user:
        raise SubscriptionError("user", "a user subscription names the account")
    if not sub.events or any(e not in EVENT_TYPES for e in sub.events):
        raise SubscriptionError("events", f"events are among {', '.join(EVENT_TYPES)}")
    if sub.provider not in PROVIDERS:
        raise SubscriptionError("provider", f"provider is one of {', '.join(PROVIDERS)}")
    if sub.mode not in MODES:
        raise SubscriptionError("mode", f"mode is one of {', '.join(MODES)}")
    from .providers import check_target  # the provider knows what its target needs

    check_target(sub.provider, sub.target)
    for pattern in sub.patterns:
        if len(pattern) > MAX_PATTERN:
            raise SubscriptionError("patterns", f"a pattern is limited to {MAX_PATTERN} chars")
        try:
            re.compile(pattern)
        except re.error as exc:
            msg = f"{pattern!r} is no regular expression: {exc}"
            raise SubscriptionError("patterns", msg) from None


def _compile(sub: Subscription) -> re.Pattern[str] | None:
    parts = [rf"(?<!\w){re.escape(k)}(?!\w)" for k in sub.keywords]  # whole words
    parts += [f"(?:{p})" for p in sub.patterns]
    parts += [rf"(?<![\w#]){re.escape('#' + t.lstrip('#'))}(?!\w)" for t in sub.tags]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


WORD = re.compile(r"\w+")
TAG = re.compile(r"(?<![\w#])#(\w+)")


class _Bucket:
    """The subscriptions of one (source, event type): those without a text filter, those whose
    keywords and tags are plain words (found by looking the message's words up), and the rest
    (regular expressions, keywords with punctuation), whose compiled filter runs."""

    __slots__ = ("always", "words", "tags", "scan")

    def __init__(self) -> None:
        self.always: dict[str, Subscription] = {}
        self.words: dict[str, dict[str, Subscription]] = {}
        self.tags: dict[str, dict[str, Subscription]] = {}
        self.scan: dict[str, Subscription] = {}

    def __bool__(self) -> bool:
        return bool(self.always or self.words or self.tags or self.scan)

    def _places(self, sub: Subscription) -> list[dict[str, Subscription]]:
        if sub._text is None:
            return [self.always]
        places = []
        for word in sub.keywords:
            if WORD.fullmatch(word):
                places.append(self.words.setdefault(word.lower(), {}))
        for tag in sub.tags:
            if WORD.fullmatch(tag.lstrip("#")):
                places.append(self.tags.setdefault(tag.lstrip("#").lower(), {}))
        plain = all(WORD.fullmatch(k) for k in sub.keywords)
        plain = plain and all(WORD.fullmatch(t.lstrip("#")) for t in sub.tags)
        if sub.patterns or not plain:
            places.append(self.scan)
        return places

    def add(self, sub: Subscription) -> None:
        for place in self._places(sub):
            place[sub.id] = sub

    def remove(self, sub: Subscription) -> None:
        for place in self._places(sub):
            place.pop(sub.id, None)
        for index in (self.words, self.tags):
            for name in [n for n, subs in index.items() if not subs]:
                del index[name]

    def match(self, event: Event, found: dict[str, Subscription]) -> None:
        for sub in self.always.values():
            if sub.accepts(event):
                found[sub.id] = sub
        text = event.text.lower()
        if self.words:
            for word in set(WORD.findall(text)) & self.words.keys():
                for sub in self.words[word].values():
                    if sub.id not in found and sub.passes(event):
                        found[sub.id] = sub
        if self.tags:
            for tag in set(TAG.findall(text)) & self.tags.keys():
                for sub in self.tags[tag].values():
                    if sub.id not in found and sub.passes(event):
                        found[sub.id] = sub
        for sub in self.scan.values():
            if sub.id not in found and sub.accepts(event):
                found[sub.id] = sub


class Matcher:
    """Subscriptions indexed by (source key, event type): an event looks up the few buckets
    that can concern it (its room, all rooms, its account); within a bucket, plain keywords and
    tags are found by the message's words, and only the other filters run."""

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self._index: dict[tuple[str, str], _Bucket] = {}

    def __len__(self) -> int:
        return len(self.subs)

    def add(self, sub: Subscription) -> None:
        self.remove(sub.id)
        self.subs[sub.id] = sub
        for key in _keys(sub):
            self._index.setdefault(key, _Bucket()).add(sub)

    def remove(self, sub_id: str) -> Subscription | None:
        sub = self.subs.pop(sub_id, None)
        if sub is not None:
            for key in _keys(sub):
                bucket = self._index.get(key)
                if bucket is not None:
                    bucket.remove(sub)
                    if not bucket:
                        del self._index[key]
        return sub

    def match(self, event: Event) -> list[Subscription]:
        found: dict[str, Subscription] = {}
        for scope in _event_scopes(event):
            bucket = self._index.get((scope, event.type))
            if bucket is not None:
                bucket.match(event, found)
        return list(found.values())


def _scope(sub: Subscription) -> str:
    if sub.source == "room":
        return f"room:{sub.room}"
    if sub.source == "user":
        return f"user:{sub.user}"
    return sub.source


def _keys(sub: Subscription) -> list[tuple[str, str]]:
    return [(_scope(sub), e) for e in sub.events]


def _event_scopes(event: Event) -> tuple[str, ...]:
    if event.source == "room":
        return (f"room:{event.room}", "rooms")
    if event.source == "user":
        return (f"user:{event.sender}",)
    return ("accounts",)
