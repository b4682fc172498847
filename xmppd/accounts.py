"""Disabled accounts: kept with all their data, but nobody can log in to them.

The flag lives in the ban service (`server.bans`, xmppd/bans.py: stored, loaded at start,
shared by cluster nodes), which every login path asks; this module is what the admin
front-ends call (the XEP-0133 ad-hoc commands, the admin socket; the HTTP API calls the ban
service directly): it checks that the account exists, logs who did it and answers in the
admin channel's shape. A disabled account:
- XMPP streams (TCP, WebSocket, BOSH): SASL answers `<account-disabled/>` (RFC 6120 §6.5.1)
  with the reason as text, only after the password was proven (xmppd/session.py), so the
  flag is no oracle for password guessers;
- the web client's password login and the JSON channels: HTTP 403 with the reason.
Disabling ends the account's sessions at once (stream error `not-authorized`, RFC 6120
§4.9.3.12) and revokes its tokens and one-time passwords.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .admin import AdminError, account
from .storage import StorageError

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("xmppd.admin")
MAX_REASON = 500


async def disable(server: Server, jid: str, *, reason: str = "", by: str = "") -> dict[str, Any]:
    """Disable an account (idempotent) and end its sessions."""
    bare = await _existing(server, jid)
    reason = reason.strip()[:MAX_REASON]
    try:
        ended = await server.bans.disable(bare, reason=reason, by=by)
    except StorageError as exc:
        raise AdminError("storage", f"cannot store the account state: {exc}") from None
    log.warning("account %s disabled by %s (%d session(s) ended)", bare, by or "?", ended)
    return {"jid": bare, "disabled": True, "sessions_ended": ended}


async def enable(server: Server, jid: str, *, by: str = "") -> dict[str, Any]:
    """Re-enable an account; enabling one that is not disabled changes nothing."""
    bare = await _existing(server, jid)
    try:
        was = await server.bans.enable(bare)
    except StorageError as exc:
        raise AdminError("storage", f"cannot store the account state: {exc}") from None
    if was:
        log.warning("account %s re-enabled by %s", bare, by or "?")
    return {"jid": bare, "disabled": False, "was_disabled": was}


async def _existing(server: Server, jid: str) -> str:
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    if not await host.auth.user_exists(local):
        raise AdminError("no-account", f"no account {bare}")
    return bare
