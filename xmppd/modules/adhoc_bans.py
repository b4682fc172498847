"""Ban commands for admins over XEP-0050 (next to the XEP-0133 set of adhoc_admin.py), on the
ban service `server.bans` (xmppd/bans.py) that the admin HTTP API uses too: the same bans,
expiry, persistence and effects whichever front-end set them.

Commands (node `urn:xmppd:admin:bans#<name>`, forms of that FORM_TYPE):
ban-account (server-wide: sessions end, logins refused until the end), ban-from-room (outcast,
lifted at the end), ban-address (an IP address or CIDR network), list-bans, lift-ban.
A ban's end is a `duration` (`90`, `30m`, `12h`, `7d`: seconds without a unit) or an `until`
time (XEP-0082 date-time); neither: until lifted. Every action is logged on `xmppd.admin`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from ..api.schema import parse_time
from ..bans import BanError
from ..module import Module
from ..muc.room import MucError
from ..protocol.forms import Field
from .adhoc import Command, CommandError, Context, Done, Step, admins_only

BANS = "urn:xmppd:admin:bans"
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = 100 * 365 * 86400
audit = logging.getLogger("xmppd.admin")


def _refused(message: str) -> CommandError:
    return CommandError("bad-request", message, "bad-payload")


def parse_duration(text: str) -> int:
    """`90`, `30m`, `12h`, `7d`, `2w` as seconds."""
    found = re.fullmatch(r"\s*(\d{1,10})\s*([smhdw]?)\s*", text.lower())
    if not found or not 0 < int(found[1]) * UNITS[found[2]] <= MAX_DURATION:
        raise _refused(f"duration {text!r}: a number with s, m, h, d or w (e.g. 12h)")
    return int(found[1]) * UNITS[found[2]]


def ban_end(ctx: Context) -> float | None:
    duration, until = ctx.one("duration").strip(), ctx.one("until").strip()
    if duration and until:
        raise _refused("give a duration or an end time, not both")
    if duration:
        return time.time() + parse_duration(duration)
    if until:
        try:
            return parse_time(until).timestamp()
        except ValueError as exc:
            raise _refused(f"until: {exc}") from None
    return None


def _check_end(ctx: Context) -> None:
    end = ban_end(ctx)
    if end is not None and end <= time.time():
        raise _refused("the ban would end in the past")


def _end_fields(_ctx: Context) -> list[Field]:
    return [
        Field("duration", "text-single", "Duration (e.g. 30m, 12h, 7d; empty: see end time)"),
        Field("until", "text-single", "Or end time (e.g. 2026-12-31T23:59:00Z)"),
        Field("reason", "text-single", "Reason (shown to the user)"),
    ]


def _accounts_field(label: str) -> Field:
    return Field("accountjids", "jid-multi", label, required=True)


def _account_fields(ctx: Context) -> list[Field]:
    return [_accounts_field("The account(s) to ban"), *_end_fields(ctx)]


def _room_fields(ctx: Context) -> list[Field]:
    return [
        Field("roomjid", "jid-single", "The room", required=True),
        _accounts_field("The account(s) to ban from the room"),
        *_end_fields(ctx),
    ]


def _address_fields(ctx: Context) -> list[Field]:
    label = "IP address(es) or network(s) (CIDR)"
    return [Field("addresses", "text-multi", label, required=True), *_end_fields(ctx)]


async def _ban_each(ctx: Context, kind: str, targets: list[str], room: str | None = None) -> Done:
    if not targets:
        raise _refused("give at least one target")
    end, reason, bans = ban_end(ctx), ctx.one("reason"), ctx.session.server.bans
    done, failed = [], []
    for target in targets:
        try:
            ban = await bans.ban(
                kind, target, until=end, reason=reason, by=ctx.requester, room=room
            )
        except (BanError, MucError) as exc:
            failed.append(f"{target}: {exc}")
            continue
        done.append(f"{ban.key} until {ban.public()['until'] or 'lifted'}")
    audit.warning("%s (ad-hoc) banned %s: %s", ctx.requester, kind, "; ".join(done) or "-")
    lines = [f"banned {d}" for d in done] + [f"failed: {f}" for f in failed]
    return Done("\n".join(lines), "error" if failed and not done else "info")


async def ban_accounts(ctx: Context) -> Done:
    return await _ban_each(ctx, "account", ctx.many("accountjids"))


async def ban_from_room(ctx: Context) -> Done:
    if not ctx.one("roomjid").strip():
        raise _refused("give the room")
    return await _ban_each(ctx, "room", ctx.many("accountjids"), ctx.one("roomjid").strip())


async def ban_addresses(ctx: Context) -> Done:
    targets = [line.strip() for text in ctx.many("addresses") for line in text.splitlines()]
    return await _ban_each(ctx, "ip", [t for t in targets if t])


def _describe(ban: object) -> str:
    public = ban.public()  # type: ignore[attr-defined]
    reason = f" ({public['reason']})" if public["reason"] else ""
    return f"{public['kind']} {ban.key} until {public['until'] or 'lifted'}{reason}"  # type: ignore[attr-defined]


async def list_bans(ctx: Context) -> Done:
    lines = [f"{b.id}: {_describe(b)}" for b in ctx.session.server.bans.list()]
    return Done(fields=[Field("bans", "text-multi", "Bans in force", lines or ["none"])])


def _lift_fields(ctx: Context) -> list[Field]:
    choices = [(_describe(b), b.id) for b in ctx.session.server.bans.list()]
    return [Field("bans", "list-multi", "The ban(s) to lift", [], choices, required=True)]


async def lift_bans(ctx: Context) -> Done:
    if not ctx.many("bans"):
        raise _refused("choose at least one ban")
    lifted, unknown = [], []
    for ban_id in ctx.many("bans"):
        ban = await ctx.session.server.bans.lift(ban_id)
        (lifted.append(_describe(ban)) if ban else unknown.append(ban_id))
    audit.warning("%s (ad-hoc) lifted bans: %s", ctx.requester, "; ".join(lifted) or "-")
    lines = [f"lifted {text}" for text in lifted] + [f"no such ban: {i}" for i in unknown]
    return Done("\n".join(lines), "error" if unknown and not lifted else "info")


def commands(module: Module) -> list[Command]:
    allowed = admins_only(module.host)
    end = Step(_account_fields, check=_check_end)
    table: list[tuple[str, str, tuple[Step, ...], Callable[[Context], Awaitable[Done]]]] = [
        ("ban-account", "Ban Accounts Server-Wide", (end,), ban_accounts),
        (
            "ban-from-room",
            "Ban Accounts from a Room",
            (Step(_room_fields, check=_check_end),),
            ban_from_room,
        ),
        (
            "ban-address",
            "Ban IP Addresses or Networks",
            (Step(_address_fields, check=_check_end),),
            ban_addresses,
        ),
        ("list-bans", "List Bans", (), list_bans),
        ("lift-ban", "Lift Bans", (Step(_lift_fields),), lift_bans),
    ]
    return [
        Command(f"{BANS}#{n}", label, run, steps, allowed, BANS) for n, label, steps, run in table
    ]
