"""Disabled accounts: kept with all their data, but nobody can log in to them.

One record per disabled account in the host's keyval store `disabled_accounts` (key: the
localpart): `{"since": <unix time>, "reason": "...", "by": "<who disabled it>"}`; no record
means enabled. It sits beside the account backend, so it works the same for internal and
LDAP accounts and survives restarts. Everything that disables or re-enables an account (the
XEP-0133 ad-hoc commands, the admin socket, the admin HTTP API) calls `disable` / `enable`
here; everything that logs someone in asks `refusal`:
- XMPP streams (TCP, WebSocket, BOSH): SASL answers `<account-disabled/>` (RFC 6120 §6.5.1)
  with the reason as text, only after the password was proven (xmppd/session.py), so the
  flag is no oracle for password guessers;
- the web client's password login (HTTP 403) and the JSON channels (HTTP 403 on connect).
Disabling ends the account's sessions at once (stream error `not-authorized`, RFC 6120
§4.9.3.12: the entity is no longer authorized) and voids its one-time passwords.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .admin import AdminError, account, end_sessions, sessions_of
from .storage import StorageError

if TYPE_CHECKING:
    from .host import Host
    from .server import Server

log = logging.getLogger("xmppd.admin")
DISABLED_STORE = "disabled_accounts"
DISABLED_TEXT = "the account is disabled"
MAX_REASON = 500


async def disabled_record(host: Host, local: str) -> dict[str, Any] | None:
    """The record of a disabled account, None when it is enabled (StorageError propagates)."""
    return await host.storage.keyval(DISABLED_STORE).get(local)


async def refusal(host: Host, local: str) -> str | None:
    """The text a login to this account is refused with, or None when it may log in."""
    record = await disabled_record(host, local)
    if record is None:
        return None
    reason = record.get("reason") or ""
    return f"{DISABLED_TEXT}: {reason}" if reason else DISABLED_TEXT


async def disable(server: Server, jid: str, *, reason: str = "", by: str = "") -> dict[str, Any]:
    """Disable an account (idempotent) and end its sessions."""
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    reason = reason.strip()[:MAX_REASON]
    await _must_exist(host, local, bare)
    record = {"since": int(time.time()), "reason": reason, "by": by}
    await _write(host, local, record)
    server.credentials.revoke(user=bare)
    text = f"{DISABLED_TEXT}: {reason}" if reason else DISABLED_TEXT
    ended = await end_sessions(sessions_of(host, bare), "not-authorized", text)
    log.warning("account %s disabled by %s (%d session(s) ended)", bare, by or "?", ended)
    return {"jid": bare, "disabled": True, "sessions_ended": ended}


async def enable(server: Server, jid: str, *, by: str = "") -> dict[str, Any]:
    """Re-enable an account; enabling one that is not disabled changes nothing."""
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    await _must_exist(host, local, bare)
    was = await _read(host, local)
    if was is not None:
        await _write(host, local, None)
        log.warning("account %s re-enabled by %s", bare, by or "?")
    return {"jid": bare, "disabled": False, "was_disabled": was is not None}


async def list_disabled(host: Host) -> list[str]:
    try:
        locals_ = await host.storage.keyval(DISABLED_STORE).users()
    except StorageError as exc:
        raise AdminError("storage", f"cannot read the disabled accounts: {exc}") from None
    return sorted(f"{local}@{host.domain}" for local in locals_)


async def _must_exist(host: Host, local: str, bare: str) -> None:
    if not await host.auth.user_exists(local):
        raise AdminError("no-account", f"no account {bare}")


async def _read(host: Host, local: str) -> dict[str, Any] | None:
    try:
        return await disabled_record(host, local)
    except StorageError as exc:
        raise AdminError("storage", f"cannot read the account state: {exc}") from None


async def _write(host: Host, local: str, record: dict[str, Any] | None) -> None:
    try:
        await host.storage.keyval(DISABLED_STORE).set(local, record)
    except StorageError as exc:
        raise AdminError("storage", f"cannot store the account state: {exc}") from None
