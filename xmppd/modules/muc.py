"""Multi-User Chat (XEP-0045) on `conference.<domain>`: this module only creates the service.

The service is a component registered in the server's routing table next to the hosts, listed
in the host's disco#items; all room logic lives in the `xmppd.muc` package.
"""

from __future__ import annotations

from ..events import ROOM_EVENTS, AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..muc.component import Component
from ..muc.service import MucService
from ..options import ConfigError, Option
from ..protocol.jid import JIDError, prep_domain


def load(module: Module) -> None:
    host = module.host
    domain = module.options["domain"] or f"conference.{host.domain}"
    try:
        domain = prep_domain(domain)
    except JIDError as exc:
        raise ConfigError(f"not a valid domain: {exc}", "modules.muc.domain") from None
    component = Component(domain, host)
    try:
        component.register()
    except ValueError as exc:
        raise ConfigError(str(exc), "modules.muc.domain") from None
    host.events.declare(*ROOM_EVENTS)  # fired by the service on every host (events.RoomEvent)
    service = MucService(module, component)
    service.install()
    host.services["muc"] = service
    host.disco_items[domain] = module.options["name"]

    async def account_deleted(event: AccountDeleted) -> bool:
        for other in host.hosts.values():  # rooms of every host's service may name it
            muc = other.services.get("muc")
            if isinstance(muc, MucService):
                await muc.drop_account(event.bare)
        return False

    module.hook("account-deleted", account_deleted)


spec = ModuleSpec(
    name="muc",
    summary="multi-user chat rooms on conference.<domain>",
    load=load,
    options={
        "domain": Option(str, "", "the service's domain; empty: conference.<host domain>"),
        "name": Option(str, "Chatrooms", "the service's name in discovery"),
        "creation": Option(
            str,
            "local",
            "who may create rooms: users of this server or anyone",
            choices=("local", "anyone"),
        ),
        "lock_new_rooms": Option(
            bool, True, "a new room stays locked until its owner configures it (XEP-0045 §10.1)"
        ),
        "max_rooms_per_user": Option(
            int, 10, "rooms one account may create; more is refused with policy-violation", min=0
        ),
        "max_occupants": Option(
            int, 200, "occupants per room at most (owners and admins may exceed it)", min=1
        ),
        "max_affiliations": Option(
            int,
            1000,
            "members, admins, owners and bans per room; more is refused with policy-violation",
            min=1,
        ),
        "max_history": Option(
            int, 50, "messages a room keeps for newcomers at most", min=0, max=1000
        ),
        "message_rate": Option(
            float, 2.0, "messages per second an occupant may send on average", min=0.01
        ),
        "message_burst": Option(
            int,
            30,
            "messages an occupant may send at once before the rate applies (a pasted paragraph)",
            min=1,
        ),
        "archive_page_size": Option(
            int, 50, "room archive results per query page when unasked (XEP-0313)", min=1
        ),
        "archive_max_page_size": Option(int, 250, "most room archive results per page", min=1),
        "hide_deleted_accounts_history": Option(
            bool,
            False,
            "messages of deleted accounts are no longer served in room history and archives",
        ),
        "list_occupants": Option(
            bool,
            False,
            "a room's disco#items lists its occupants (XEP-0045 §6.5; to occupants, and to "
            "anyone for public rooms open to all)",
        ),
    },
    implements=(
        Implements(
            "XEP-0045",
            "1.35",
            status="partial",
            note="no nick registration (§7.10)",
        ),
        Implements("XEP-0249", "1.2", note="direct invitations pass through unchanged"),
        Implements("XEP-0410", "1.1.0", note="the service answers self-pings"),
        Implements("XEP-0359", "0.7.0", status="partial", note="stanza-id on room messages"),
        Implements("XEP-0313", "1.1.1", status="partial", note="room archives on the room JID"),
        Implements(
            "XEP-0424",
            "0.4.2",
            status="partial",
            note="in rooms: author retraction, tombstones; account archives keep the original",
        ),
        Implements("XEP-0425", "0.3.0", note="moderated retraction; no :0 compatibility"),
    ),
)
