"""In-process pub/sub and presence tracking for xmppd (never imports xmppd).

See docs/pubsub.md. The names below are the public API.
"""

from .adapters import Adapter, LocalAdapter
from .bus import PubSub, Subscriber
from .mailbox import Mailbox
from .presence import PresenceDiff, Tracker
from .state import Delta, Entry, State
from .topics import (
    parse_topic,
    presence_topic,
    room_topic,
    session_topic,
    tracker_topic,
    user_topic,
)
from .wire import Envelope

__all__ = [
    "Adapter",
    "Delta",
    "Entry",
    "Envelope",
    "LocalAdapter",
    "Mailbox",
    "PresenceDiff",
    "PubSub",
    "State",
    "Subscriber",
    "Tracker",
    "parse_topic",
    "presence_topic",
    "room_topic",
    "session_topic",
    "tracker_topic",
    "user_topic",
]
