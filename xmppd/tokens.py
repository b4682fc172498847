"""Host-app tokens on the server: verification with revocation, and the live sessions they
opened (`server.tokens`).

A host app (through the admin channel or the admin API) revokes one token by its `jti`, or
every token of a user issued before a moment. Revocations are stored (map store
`token-revocations` of the server's first domain) before `revoke` returns, loaded at start, and
forgotten once the tokens they cover would be refused as expired anyway. Revoking also voids
the one-time passwords those tokens bought and ends, at once, every JSON-channel session opened
with them. A channel session also ends by itself at its token's `exp` (`deadline`).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from auth.tokens import App, Claims, CredentialStore, TokenVerifier

if TYPE_CHECKING:
    from .storage.base import MapStore, Storage

log = logging.getLogger("xmppd.tokens")
STORE = "token-revocations"
EXPIRED, REVOKED = "token expired", "token revoked"
LOGIN_APP = "login"  # the built-in app whose tokens POST /login issues


class TokenSession(Protocol):
    """A session a token opened (xmppd/channels/session.py)."""

    claims: Claims

    def end(self, reason: str) -> None: ...


class TokenService:
    def __init__(self, settings: dict[str, Any], domain: str) -> None:
        self.verifier = TokenVerifier(settings, domain)
        self.credentials = CredentialStore(settings["credentials_lifetime"])
        self.sessions: set[TokenSession] = set()
        self._store: MapStore | None = None
        self.domain = domain
        self.login_lifetime = min(
            settings.get("login_lifetime", 86400.0), settings.get("max_lifetime", 86400.0)
        )
        self._login_key: Any = None
        # Cluster mode: tells every other node of a revocation; the sessions they ended.
        self.peers: Callable[[dict[str, Any]], Awaitable[int]] | None = None

    # ---- session tokens for password logins (POST /login, docs/channels.md) ------------------

    def enable_login(self, secret: bytes) -> None:
        """Sign session tokens with a key derived from the installation's secret; they verify
        like the tokens of a host app named `login`, for every domain served here."""
        from joserfc.jwk import OctKey

        key = OctKey.import_key(hmac.new(secret, b"xmppd login tokens", "sha256").digest())
        self._login_key = key
        self.verifier.apps[LOGIN_APP] = App(LOGIN_APP, "HS256", key, self.domain, self.domain)

    def issue_login(self, jid: str, name: str = "") -> tuple[str, float]:
        """A session token for an account whose password was just checked: (token, exp)."""
        from joserfc import jws

        if self._login_key is None:
            raise RuntimeError("login tokens are not enabled")
        now = time.time()
        exp = float(int(now + self.login_lifetime))
        claims = {
            "sub": jid,
            "aud": self.domain,
            "iat": int(now),
            "exp": int(exp),
            "jti": secrets.token_urlsafe(16),
            "topics": ["room:*"],
        }
        if name:
            claims["name"] = name
        header = {"alg": "HS256", "kid": LOGIN_APP, "typ": "JWT"}
        token = jws.serialize_compact(header, json.dumps(claims), self._login_key)
        return token, exp

    def verify(self, token: str, peer: str = "") -> Claims:
        """The claims of a valid, unrevoked token, or TokenError (logged)."""
        return self.verifier.verify(token, peer=peer)

    def deadline(self, claims: Claims) -> float:
        """When (on trio's clock) a session opened with these claims must end."""
        left = claims.exp + self.verifier.leeway - time.time()
        return trio.current_time() + left

    def issue_password(self, claims: Claims) -> str:
        """A one-time XMPP password that dies with its token (revocation or `exp`)."""
        left = claims.exp + self.verifier.leeway - time.time()
        return self.credentials.issue(claims.jid, ttl=left, jti=claims.jti)

    # ---- revocation -----------------------------------------------------------------------

    async def load(self, storage: Storage) -> None:
        """Read the stored revocations (at start, before the listeners open)."""
        self._store = storage.map(STORE)
        revocations, now = self.verifier.revocations, time.time()
        for jti, doc in (await self._store.get_all("jti")).items():
            revocations.add_jti(jti, float(doc["until"]))
        for jid, doc in (await self._store.get_all("user")).items():
            revocations.add_user(jid, float(doc["before"]), float(doc["until"]))
        await self._prune(now)
        count = len(revocations.jtis) + len(revocations.users)
        if count:
            log.info("%d token revocations in force", count)

    async def revoke(
        self,
        *,
        jti: str | None = None,
        user: str | None = None,
        before: float | None = None,
        until: float | None = None,
    ) -> int:
        """Revoke token `jti` and/or every token of `user` (a bare JID) issued before `before`
        (default: now). The entry is kept until `until` (epoch seconds; default: when every
        covered token would have expired: for a token without iat pass its exp). Durable when
        it returns; the number of live sessions it ended."""
        if jti is None and user is None:
            raise ValueError("revoke what? give jti or user")
        now = time.time()
        v = self.verifier
        horizon = now + v.max_lifetime + v.leeway + v.iat_leeway
        ended = [s for s in self.sessions if _covered(s.claims, jti, user, before)]
        entry: dict[str, Any] = {"jti": jti, "user": user}
        if jti is not None:
            known = [s.claims.exp + v.leeway for s in ended if s.claims.jti == jti]
            stamp = v.revocations.add_jti(jti, until or max([horizon, *known]))
            await self._save("jti", jti, {"until": stamp})
            self.credentials.revoke(jti=jti)
            entry["jti_until"] = stamp
        if user is not None:
            since = now if before is None else before
            first, last = v.revocations.add_user(user, since, until or horizon)
            await self._save("user", user, {"before": first, "until": last})
            self.credentials.revoke(user=user)
            entry.update(before=first, user_until=last)
        for session in ended:
            session.end(REVOKED)
        log.info("revoked tokens (jti=%s, user=%s): %d live sessions ended", jti, user, len(ended))
        await self._prune(now)
        elsewhere = await self.peers(entry) if self.peers is not None else 0
        return len(ended) + elsewhere

    def apply_peer(self, entry: dict[str, Any]) -> int:
        """Another node's revocation (stored by it): into this node's memory, its one-time
        passwords void, its live sessions here ended. The number ended."""
        jti, user, v = entry.get("jti"), entry.get("user"), self.verifier
        before = entry.get("before")
        ended = [s for s in self.sessions if _covered(s.claims, jti, user, before)]
        if jti is not None:
            v.revocations.add_jti(jti, float(entry["jti_until"]))
            self.credentials.revoke(jti=jti)
        if user is not None:
            v.revocations.add_user(user, float(entry["before"]), float(entry["user_until"]))
            self.credentials.revoke(user=user)
        for session in ended:
            session.end(REVOKED)
        log.info("revoked on another node (jti=%s, user=%s): %d ended here", jti, user, len(ended))
        return len(ended)

    async def _save(self, kind: str, key: str, doc: dict[str, float] | None) -> None:
        if self._store is not None:
            await self._store.set(kind, key, doc)

    async def _prune(self, now: float) -> None:
        jtis, users = self.verifier.revocations.prune(now)
        for kind, keys in (("jti", jtis), ("user", users)):
            for key in keys:
                await self._save(kind, key, None)


def _covered(claims: Claims, jti: str | None, user: str | None, before: float | None) -> bool:
    if jti is not None and claims.jti == jti:
        return True
    return user is not None and claims.jid == user and (before is None or claims.issued < before)
