"""iq requests between occupants (XEP-0045 §7.5 'IQ Requests' / Prosody-style proxying).

The request goes out from the asker's occupant JID with a fresh id to one session of the
target (the newest), or to the target's bare JID for vCards (the server answers those on the
account's behalf); the answer comes back to the asker from the target's occupant JID with
the original id. Pending requests are bounded; the oldest are forgotten first.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, first_child, local_name, namespace_of
from .room import MucError, Room

if TYPE_CHECKING:
    from .service import MucService

MAX_PENDING = 10_000


class IqForwarder:
    def __init__(self, service: MucService) -> None:
        self.service = service
        # (address the request went to, new id) -> (asker's real JID, original id, from)
        self.pending: OrderedDict[tuple[str, str], tuple[str, str, str]] = OrderedDict()

    async def request(self, room: Room, real: str, nick: str, stanza: Element) -> None:
        sender = room.occupant_of(real)
        if sender is None:
            raise MucError("not-acceptable", "you are not in this room")
        target = room.occupants.get(nick)
        if target is None or not target.seats:
            raise MucError("item-not-found", "no such occupant")
        child = first_child(stanza)
        vcard = child is not None and (namespace_of(child), local_name(child)) == (
            ns.VCARD,
            "vCard",
        )
        to = target.bare if vcard else next(reversed(target.seats))
        new_id = secrets.token_hex(8)
        self.pending[(to, new_id)] = (real, stanza.get("id") or "", room.occupant_jid(target))
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        out = copy(stanza)
        out.set("id", new_id)
        out.set("from", room.occupant_jid(sender))
        out.set("to", to)
        await self.service.send(out)

    async def answer(self, responder: str, stanza: Element) -> bool:
        """A result or error for a forwarded request: back to the asker. False: not ours."""
        entry = self.pending.pop((responder, stanza.get("id") or ""), None)
        if entry is None:
            return False
        asker, original_id, occupant_jid = entry
        out = copy(stanza)
        out.set("id", original_id)
        out.set("from", occupant_jid)
        out.set("to", asker)
        await self.service.send(out)
        return True
