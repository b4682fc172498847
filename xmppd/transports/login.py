"""Password login for the web client: `POST /login` trades the account password, once, for a
session token the browser keeps; `POST /logout` revokes it (docs/channels.md, "Password login").

The password is checked by the host's auth backend inside the login gate, like a SASL login:
failures from an address slow its next attempts down, then ban it (xmppd/login_gate.py). The
token is signed by the server (`server.tokens.issue_login`) and opens the JSON channels like a
host-app token.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from auth.base import AuthError
from auth.tokens import TokenError

from .. import metrics
from ..protocol.jid import JID, JIDError
from ..tokens import LOGIN_APP
from .http import HttpError, Request

if TYPE_CHECKING:
    from .http import Web

log = logging.getLogger("xmppd.auth")
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
MAX_PASSWORD = 1024


def _json(web: Web, request: Request, status: int, body: dict[str, Any] | None) -> tuple:
    headers = [*web.cors_headers(request), ("Cache-Control", "no-store")]
    if body is None:
        return status, headers, b""
    return status, [("Content-Type", "application/json"), *headers], json.dumps(body).encode()


def _credentials(web: Web, request: Request) -> tuple[JID, str]:
    try:
        form = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(form, dict):
        raise HttpError(400, 'send {"jid": ..., "password": ...}')
    who, password = form.get("jid") or form.get("username"), form.get("password")
    if not isinstance(who, str) or not isinstance(password, str) or not who or not password:
        raise HttpError(400, "jid (or username) and password are strings")
    if len(password) > MAX_PASSWORD:
        raise HttpError(400, "the password is too long")
    domain = web.server.tokens.domain
    try:
        jid = JID.parse(who if "@" in who else f"{who}@{domain}")
    except JIDError as exc:
        raise HttpError(400, f"not a JID: {exc}") from None
    if jid.resource is not None or not jid.local:
        raise HttpError(400, "give a bare JID or a user name")
    if jid.domain != domain:
        raise HttpError(400, f"only accounts of {domain} log in here")
    return jid, password


async def login(web: Web, request: Request) -> tuple:
    if request.method != "POST":
        raise HttpError(405, "use POST", [("Allow", "POST, OPTIONS")])
    server = web.server
    bearer = request.headers.get("authorization", "")
    if bearer[:7].lower() == "bearer " and not request.body.strip():
        return await _renew(web, request, bearer[7:].strip())
    jid, password = _credentials(web, request)
    bare, peer = str(jid), request.peer
    host = server.hosts[jid.domain]
    throttle = server.login_throttle
    async with server.login_gate.attempt(peer, bare) as allowed:
        if not allowed:
            web.refuse_banned(peer)
            raise HttpError(429, "too many failed logins")
        try:
            ok = await host.auth.check_password(jid.local or "", password)
        except AuthError:
            log.exception("cannot check a web login for %s", bare)
            raise HttpError(503, "the account service is unavailable; try again") from None
        if not ok:
            throttle.record_failure(peer, bare, time.monotonic())
            metrics.login("password", False)
            log.warning("failed web login for %s from %s", bare, peer)
            return _json(web, request, 401, {"error": "not-authorized"})
    throttle.record_success(peer, bare, time.monotonic())
    refusal = server.bans.login_refusal(bare)  # banned or disabled (xmppd/bans.py)
    if refusal is not None:
        return _json(web, request, 403, {"error": "account-disabled", "text": refusal})
    metrics.login("password", True)
    token, exp = server.tokens.issue_login(bare, name=jid.local or "")
    log.info("web login for %s from %s", bare, peer)
    return _json(web, request, 200, {"token": token, "jid": bare, "exp": exp})


def refuse_disabled(server: Any, bare: str) -> None:
    """A banned or disabled account (xmppd/bans.py) gets 403 with the reason (asked once the
    password or token was accepted, so the refusal tells a guesser nothing)."""
    text = server.bans.login_refusal(bare)
    if text is not None:
        raise HttpError(403, text)


async def _renew(web: Web, request: Request, token: str) -> tuple:
    claims = _claims(web, request, token)
    refuse_disabled(web.server, claims.jid)
    fresh, exp = web.server.tokens.issue_login(claims.jid, name=claims.name)
    return _json(web, request, 200, {"token": fresh, "jid": claims.jid, "exp": exp})


def _claims(web: Web, request: Request, token: str) -> Any:
    try:
        claims = web.server.tokens.verify(token, peer=request.peer)
    except TokenError as exc:
        web.server.login_throttle.record_failure(request.peer, None, time.monotonic())
        raise HttpError(403, f"token refused: {exc}") from None
    if claims.app != LOGIN_APP:
        raise HttpError(403, "not a login session token")
    return claims


async def logout(web: Web, request: Request) -> tuple:
    if request.method != "POST":
        raise HttpError(405, "use POST", [("Allow", "POST, OPTIONS")])
    bearer = request.headers.get("authorization", "")
    if bearer[:7].lower() != "bearer ":
        raise HttpError(401, "send the session token as Authorization: Bearer")
    claims = _claims(web, request, bearer[7:].strip())
    if claims.jti is not None:
        await web.server.tokens.revoke(jti=claims.jti)
    log.info("web logout for %s", claims.jid)
    return _json(web, request, 204, None)
