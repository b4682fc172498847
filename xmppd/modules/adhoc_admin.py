"""XEP-0133 Service Administration over the ad-hoc commands of modules/adhoc.py: what an admin
needs from an XMPP client. Only admins (xmppd/roles.py) see or run them; others get
`forbidden`.

Commands (node `http://jabber.org/protocol/admin#<name>`, forms of that FORM_TYPE):
add-user, delete-user (two steps: the accounts, then a confirmation), disable-user,
reenable-user, change-user-password, end-user-session, get-online-users-num,
get-online-users-list, announce, set-motd, edit-motd, delete-motd.

Each does its work through the same functions as the admin socket and the admin HTTP API
(`xmppd/admin.py`, `xmppd/accounts.py`), so deleting an account here is the whole
`account-deleted` path. Accounts must belong to the host the command was sent to. Every
action is logged on `xmppd.admin` with the admin's JID.

The message of the day is kept in the keyval store `motd` and sent as a headline from the
server to each session when it first becomes available.

The ban commands (on `xmppd/bans.py`, like the admin HTTP API's) are in adhoc_bans.py and
registered here with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .. import accounts, admin
from ..module import Implements, Module, ModuleSpec
from ..protocol.forms import Field
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import make, sub
from . import adhoc_bans
from .adhoc import Command, CommandError, Context, Done, Step, admins_only

ADMIN = "http://jabber.org/protocol/admin"
MOTD_STORE, MOTD_KEY = "motd", "server"
MAX_ANNOUNCE = 16 * 1024
audit = logging.getLogger("xmppd.admin")
Run = Callable[[Context], Awaitable[Done]]


def node(name: str) -> str:
    return f"{ADMIN}#{name}"


# ---- fields and checks ---------------------------------------------------------------------


def _jids_field(ctx: Context) -> list[Field]:
    return [
        Field(
            "accountjids", "jid-multi", "The Jabber ID(s)", ctx.many("accountjids"), required=True
        )
    ]


def _account(ctx: Context, text: str, *, full: bool = False) -> JID:
    """An account of this host (a full JID when `full` allows one)."""
    try:
        jid = JID.parse(text.strip())
    except JIDError as exc:
        raise CommandError("bad-request", f"invalid JID {text!r}: {exc}", "bad-payload") from None
    if jid.local is None or (jid.resource is not None and not full):
        raise CommandError("bad-request", f"{text!r} is not an account JID", "bad-payload")
    if jid.domain != ctx.host.domain:
        raise CommandError("bad-request", f"{jid.domain} is not this host", "bad-payload")
    return jid


def _check_jids(ctx: Context) -> None:
    if not ctx.many("accountjids"):
        raise CommandError("bad-request", "give at least one account", "bad-payload")
    for text in ctx.many("accountjids"):
        _account(ctx, text, full=True)


def _check_new_user(ctx: Context) -> None:
    _account(ctx, ctx.one("accountjid"))
    if not ctx.one("password"):
        raise CommandError("bad-request", "a password is required", "bad-payload")
    if ctx.one("password-verify", ctx.one("password")) != ctx.one("password"):
        raise CommandError("bad-request", "the passwords differ", "bad-payload")


def _summary(done: list[str], failed: list[str], verb: str) -> Done:
    lines = [f"{verb}: {', '.join(done)}"] if done else []
    lines += [f"failed: {f}" for f in failed]
    return Done("\n".join(lines) or "nothing to do", "error" if failed and not done else "info")


async def _each(ctx: Context, action: Callable[[str], Awaitable[object]], verb: str) -> Done:
    """Run `action` for each JID of `accountjids`; the note tells which worked."""
    done, failed = [], []
    for text in ctx.many("accountjids"):
        jid = str(_account(ctx, text, full=True))
        try:
            await action(jid)
            done.append(jid)
        except admin.AdminError as exc:
            failed.append(f"{jid}: {exc.message}")
    audit.warning("%s (ad-hoc) %s: %s", ctx.requester, verb, ", ".join(done) or "-")
    return _summary(done, failed, verb)


# ---- accounts ---------------------------------------------------------------------------------


async def add_user(ctx: Context) -> Done:
    jid = str(_account(ctx, ctx.one("accountjid")))
    try:
        await admin.add_user(ctx.session.server, jid, ctx.one("password"))
    except admin.AdminError as exc:
        return Done(exc.message, "error")
    audit.warning("%s (ad-hoc) created %s", ctx.requester, jid)
    return Done(f"created {jid}")


async def delete_users(ctx: Context) -> Done:
    if ctx.one("confirm", "0") not in ("1", "true"):
        return Done("nothing deleted: not confirmed", "warn")
    return await _each(ctx, lambda j: admin.delete_user(ctx.session.server, j), "deleted")


def _confirm_fields(ctx: Context) -> list[Field]:
    names = ", ".join(ctx.many("accountjids"))
    return [
        Field("warning", "fixed", values=[f"Delete {names} and everything they stored?"]),
        Field("confirm", "boolean", "Delete", ["0"], required=True),
    ]


async def disable_users(ctx: Context) -> Done:
    reason, server = ctx.one("reason"), ctx.session.server

    async def disable(jid: str) -> object:
        return await accounts.disable(server, jid, reason=reason, by=ctx.requester)

    return await _each(ctx, disable, "disabled")


async def enable_users(ctx: Context) -> Done:
    server = ctx.session.server
    return await _each(ctx, lambda j: accounts.enable(server, j, by=ctx.requester), "re-enabled")


async def change_password(ctx: Context) -> Done:
    jid = str(_account(ctx, ctx.one("accountjid")))
    try:
        await admin.set_password(ctx.session.server, jid, ctx.one("password"), keep=ctx.session)
    except admin.AdminError as exc:
        return Done(exc.message, "error")
    audit.warning("%s (ad-hoc) changed the password of %s", ctx.requester, jid)
    return Done(f"password of {jid} changed")


async def end_sessions(ctx: Context) -> Done:
    server = ctx.session.server
    return await _each(ctx, lambda j: admin.kick(server, j, "ended by an admin"), "ended")


# ---- who is online ----------------------------------------------------------------------------


async def online_count(ctx: Context) -> Done:
    count = len(ctx.host.sessions)
    return Done(
        fields=[Field("onlineusersnum", "text-single", "Number of online users", [str(count)])]
    )


async def online_list(ctx: Context) -> Done:
    limit = ctx.one("max_items", "none")
    bares = sorted(ctx.host.sessions)
    if limit.isdigit():
        bares = bares[: int(limit)]
    return Done(
        fields=[Field("onlineuserjids", "jid-multi", "The list of all online users", bares)]
    )


def _max_items(_ctx: Context) -> list[Field]:
    choices = [(n, n) for n in ("25", "50", "75", "100", "150", "200")] + [("None", "none")]
    return [Field("max_items", "list-single", "Maximum number of items to show", ["25"], choices)]


# ---- announcements and the message of the day ---------------------------------------------------


def headline(host_domain: str, to: str, body: str, subject: str = "") -> object:
    message = make("message", {"type": "headline", "from": host_domain, "to": to})
    if subject:
        sub(message, message.nsmap[None], "subject", subject)
    sub(message, message.nsmap[None], "body", body)
    return message


async def announce(ctx: Context) -> Done:
    body = "\n".join(ctx.values.get("announcement", [])).strip()
    if not body or len(body) > MAX_ANNOUNCE:
        raise CommandError(
            "bad-request", f"an announcement of 1 to {MAX_ANNOUNCE} characters", "bad-payload"
        )
    subject, host, sent = ctx.one("subject"), ctx.host, 0
    for resources in list(host.sessions.values()):
        for session in list(resources.values()):
            sent += host.deliver_to_full(
                session.full, headline(host.domain, session.full, body, subject)
            )
    audit.warning(
        "%s (ad-hoc) announced to %d session(s): %r", ctx.requester, sent, subject or body[:60]
    )
    return Done(f"sent to {sent} session(s)")


async def read_motd(host: object) -> str:
    doc = await host.storage.keyval(MOTD_STORE).get(MOTD_KEY)  # type: ignore[attr-defined]
    return (doc or {}).get("text", "")


def _motd_fields(ctx: Context) -> list[Field]:
    return [Field("motd", "text-multi", "Message of the day", ctx.many("motd"), required=True)]


async def set_motd(ctx: Context) -> Done:
    text = "\n".join(ctx.values.get("motd", [])).strip()
    if not text or len(text) > MAX_ANNOUNCE:
        raise CommandError(
            "bad-request", f"a message of 1 to {MAX_ANNOUNCE} characters", "bad-payload"
        )
    await ctx.host.storage.keyval(MOTD_STORE).set(MOTD_KEY, {"text": text})
    audit.warning("%s (ad-hoc) set the message of the day", ctx.requester)
    return Done("message of the day set")


async def delete_motd(ctx: Context) -> Done:
    await ctx.host.storage.keyval(MOTD_STORE).set(MOTD_KEY, None)
    audit.warning("%s (ad-hoc) deleted the message of the day", ctx.requester)
    return Done("message of the day deleted")


# ---- registration -------------------------------------------------------------------------------


def _new_user_fields(ctx: Context) -> list[Field]:
    return [
        Field(
            "accountjid",
            "jid-single",
            "The Jabber ID for the account to be added",
            [ctx.one("accountjid")] if ctx.one("accountjid") else [],
            required=True,
        ),
        Field("password", "text-private", "The password for this account", required=True),
        Field("password-verify", "text-private", "Retype password", required=True),
    ]


def _password_fields(ctx: Context) -> list[Field]:
    return [
        Field("accountjid", "jid-single", "The Jabber ID for this account", required=True),
        Field("password", "text-private", "The new password", required=True),
    ]


def _disable_fields(ctx: Context) -> list[Field]:
    return [*_jids_field(ctx), Field("reason", "text-single", "Reason (shown at login)")]


def _check_password_change(ctx: Context) -> None:
    _account(ctx, ctx.one("accountjid"))
    if not ctx.one("password"):
        raise CommandError("bad-request", "a password is required", "bad-payload")


async def _edit_motd_fields(ctx: Context) -> list[Field]:
    values = ctx.many("motd") or (await read_motd(ctx.host)).splitlines()
    return [Field("motd", "text-multi", "Message of the day", values, required=True)]


def commands(module: Module) -> list[Command]:
    allowed = admins_only(module.host)
    jids = Step(_jids_field, check=_check_jids)
    table: list[tuple[str, str, tuple[Step, ...], Run]] = [
        ("add-user", "Add a User", (Step(_new_user_fields, check=_check_new_user),), add_user),
        (
            "delete-user",
            "Delete a User",
            (jids, Step(_confirm_fields, "Confirm deletion")),
            delete_users,
        ),
        (
            "disable-user",
            "Disable a User",
            (Step(_disable_fields, check=_check_jids),),
            disable_users,
        ),
        ("reenable-user", "Re-Enable a User", (jids,), enable_users),
        (
            "change-user-password",
            "Change User Password",
            (Step(_password_fields, check=_check_password_change),),
            change_password,
        ),
        ("end-user-session", "End User Session", (jids,), end_sessions),
        ("get-online-users-num", "Get Number of Online Users", (), online_count),
        ("get-online-users-list", "Get List of Online Users", (Step(_max_items),), online_list),
        ("announce", "Send Announcement to Online Users", (Step(_announce_fields),), announce),
        ("set-motd", "Set Message of the Day", (Step(_motd_fields),), set_motd),
        ("edit-motd", "Edit Message of the Day", (Step(_edit_motd_fields),), set_motd),
        ("delete-motd", "Delete Message of the Day", (), delete_motd),
    ]
    return [Command(node(n), label, run, steps, allowed, ADMIN) for n, label, steps, run in table]


def _announce_fields(_ctx: Context) -> list[Field]:
    return [
        Field("subject", "text-single", "Subject"),
        Field("announcement", "text-multi", "Announcement", required=True),
    ]


def load(module: Module) -> None:
    service = module.host.services["adhoc"]
    for command in [*commands(module), *adhoc_bans.commands(module)]:
        service.register(command)
    host = module.host

    async def send_motd(session: object) -> bool:
        text = await read_motd(host)
        if text:
            full = session.full  # type: ignore[attr-defined]
            host.deliver_to_full(full, headline(host.domain, full, text, "Message of the day"))
        return False

    module.hook("presence-initial", send_motd)


spec = ModuleSpec(
    name="adhoc_admin",
    summary="service administration from an XMPP client: XEP-0133 commands for admins",
    load=load,
    depends=("adhoc",),
    implements=(
        Implements(
            "XEP-0133",
            "1.3.1",
            "partial",
            "add, delete, disable, re-enable users; change passwords; end sessions; online "
            "users (count, list); announce; message of the day; and bans with expiry "
            "(urn:xmppd:admin:bans: accounts, room entry, addresses; list, lift)",
        ),
    ),
)
