"""The events `ServerStream` (stream.py) hands its transport, and the sentinels `next_event`
returns when it has none: a sans-IO stream's whole vocabulary towards the I/O around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .sasl import NeedPasswordCheck, NeedScramCredentials
from .stanza import Element


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")
PAUSED: Final = _Sentinel("PAUSED")


@dataclass(slots=True)
class StartTLS:
    pass


@dataclass(slots=True)
class Authenticated:
    username: str
    mechanism: str


@dataclass(slots=True)
class AuthFailed:
    username: str  # the account the attempt named ("" when it never got that far)
    condition: str  # the SASL condition sent: only "not-authorized" means a wrong secret


@dataclass(slots=True)
class BindRequest:
    username: str
    resource: str | None  # prepared; None means "server, pick one"


@dataclass(slots=True)
class StanzaIn:
    stanza: Element


@dataclass(slots=True)
class NonzaIn:
    element: Element


@dataclass(slots=True)
class LocalReply:
    request: Element
    reply: Element


@dataclass(slots=True)
class Closed:
    reason: str  # "peer-closed", or the stream error condition we sent
    error: bool = False
    text: str | None = None


Event = (
    StartTLS
    | NeedScramCredentials
    | NeedPasswordCheck
    | Authenticated
    | AuthFailed
    | BindRequest
    | StanzaIn
    | NonzaIn
    | LocalReply
    | Closed
)
