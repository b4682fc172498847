"""Host-application tokens: a trusted web app vouches for its user without a password.

The app signs (JWS: HS256, RS256, EdDSA) or encrypts (JWE: A128GCMKW + A128GCM, the compact
form Planga uses with a shared key) a JSON claim set:

* `sub`   user id ("alice" -> alice@<app domain>) or a bare JID of one of the app's domains
* `exp`   required; at most `max_lifetime` seconds ahead of now (and of `iat` when given)
* `iat`, `nbf` optional; `iat` may not lie in the future (beyond `iat_leeway`)
* `jti`   optional token id, what a host app revokes a token by (`Revocations`)
* `aud`   must equal the app's `audience`
* `name`  display name (room nick by default); `role` "user" (default) or "guest";
* `topics` channel topics the token opens (`room:<jid>`, `user:<jid>`, shell patterns allowed);
  `rooms` room JIDs, shorthand for `room:<jid>` topics. The user's own `user:` topic is implied.

Apps are found by the token header's `kid` (the app name) or, without one, by trying each app
of the header's algorithm. A refusal raises `TokenError` with a short reason the caller logs
and shows. Tokens also buy short-lived XMPP passwords (`CredentialStore`, `TokenAuth`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, OKPKey, RSAKey

from auth.base import AuthError
from auth.scram import ScramCredentials
from xmppd.storage import StorageError

log = logging.getLogger("xmppd.tokens")
SIGNING = ("HS256", "RS256", "EdDSA")
ENCRYPTING = ("A128GCMKW",)
ALGORITHMS = SIGNING + ENCRYPTING
# Header `alg` values each app algorithm accepts: RFC 9864 names Ed25519 for what EdDSA meant.
HEADER_ALGS = {"HS256": ("HS256",), "RS256": ("RS256",), "EdDSA": ("EdDSA", "Ed25519")}
HEADER_ALGS["A128GCMKW"] = ("A128GCMKW",)
ROLES = ("user", "guest")


def schemas() -> tuple[dict, dict]:
    """[auth.tokens] and each [auth.tokens.apps.<name>] (checked by xmppd.config)."""
    from xmppd.options import Option

    tokens = {
        "leeway": Option(float, 0.0, "seconds of clock skew allowed on exp and nbf", min=0),
        "iat_leeway": Option(
            float, 60.0, "seconds an iat may lie in the future (clock skew)", min=0, max=3600
        ),
        "max_lifetime": Option(
            float, 86400.0, "longest a token may live from now (and from its iat)", min=1
        ),
        "credentials_lifetime": Option(
            float, 60.0, "seconds a password from /credentials stays usable", min=5, max=3600
        ),
        "login_lifetime": Option(
            float, 86400.0, "seconds a POST /login session token lives (<= max_lifetime)", min=60
        ),
        "apps": Option(dict, {}, "trusted host applications, one table per app name"),
    }
    app = {
        "algorithm": Option(str, "HS256", "how the app protects tokens", choices=ALGORITHMS),
        "key": Option(str, "", "HS256 secret or A128GCMKW 16-byte key (text or base64url)"),
        "key_file": Option(str, "", "file with the key instead: a PEM public key for RS256/EdDSA"),
        "audience": Option(str, "", "required aud claim; empty: the server's domain"),
        "domain": Option(str, "", "domain of the app's users; empty: the server's domain"),
    }
    return tokens, app


class TokenError(Exception):
    """Refused: `reason` is one of malformed, unknown-key, forged, expired, not-yet-valid,
    wrong-audience, too-long-lived, bad-claims, revoked."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason, self.text = reason, text


@dataclass(slots=True, frozen=True)
class App:
    name: str
    algorithm: str
    key: Any  # a joserfc key
    audience: str
    domain: str


@dataclass(slots=True, frozen=True)
class Claims:
    app: str
    jid: str  # bare JID
    name: str
    role: str
    topics: tuple[str, ...]
    exp: float
    jti: str | None = None
    # When the token was issued: its iat, else the earliest it could have been (exp minus
    # max_lifetime), so that revoking a user's tokens also catches the ones without iat.
    issued: float = 0.0

    def allows(self, topic: str) -> bool:
        if topic == f"user:{self.jid}":
            return True
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.topics)


def load_key(algorithm: str, key: str, key_file: str) -> Any:
    """The verification key: a shared secret (HS256, A128GCMKW: base64url or text of 16 bytes)
    or a PEM public key (RS256, EdDSA)."""
    data = Path(key_file).read_bytes() if key_file else key.encode()
    if algorithm == "RS256":
        return RSAKey.import_key(data)
    if algorithm == "EdDSA":
        return OKPKey.import_key(data)
    if algorithm == "A128GCMKW":
        raw = data.strip()
        if len(raw) != 16:
            import base64

            raw = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        if len(raw) != 16:
            raise ValueError("an A128GCMKW key is 16 bytes (raw or base64)")
        return OctKey.import_key(raw)
    if len(data) < 32:
        raise ValueError("an HS256 secret needs at least 32 bytes")
    return OctKey.import_key(data)


class TokenVerifier:
    def __init__(self, settings: dict[str, Any], default_domain: str) -> None:
        self.leeway: float = settings.get("leeway", 0)
        self.iat_leeway: float = settings.get("iat_leeway", 60)
        self.max_lifetime: float = settings.get("max_lifetime", 86400)
        self.revocations = Revocations()
        self.apps: dict[str, App] = {}
        for name, app in settings.get("apps", {}).items():
            algorithm = app["algorithm"]
            key = load_key(algorithm, app.get("key", ""), app.get("key_file", ""))
            audience = app.get("audience") or default_domain
            domain = app.get("domain") or default_domain
            self.apps[name] = App(name, algorithm, key, audience, domain)

    def verify(self, token: str, now: float | None = None, peer: str = "") -> Claims:
        """The token's claims, or TokenError (logged, with the client's address if given)."""
        try:
            now = time.time() if now is None else now
            app, claims = self._open(token.strip())
            checked = self._check(app, claims, now)
            if self.revocations.revoked(checked, now):
                raise TokenError("revoked", "the app revoked this token")
            return checked
        except TokenError as exc:
            log.warning("refused a host-app token%s: %s", f" from {peer}" if peer else "", exc)
            raise

    def _open(self, token: str) -> tuple[App, dict[str, Any]]:
        parts = token.split(".")
        if len(parts) not in (3, 5):
            raise TokenError("malformed", "not a compact JWS or JWE")
        try:
            header = _strict_json(_b64(parts[0]))
        except ValueError:
            raise TokenError("malformed", "the header is not base64url JSON") from None
        if not isinstance(header, dict):
            raise TokenError("malformed", "the header is not a JSON object")
        alg = header.get("alg")
        accepted = [a for a, names in HEADER_ALGS.items() if alg in names]
        if not accepted or (len(parts) == 5) != (alg in ENCRYPTING):
            raise TokenError("unknown-key", f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None:
            app = self.apps.get(kid)
            if app is None or app.algorithm not in accepted:
                raise TokenError("unknown-key", f"no trusted app {kid!r} using {alg}")
            candidates = [app]
        else:
            candidates = [a for a in self.apps.values() if a.algorithm in accepted]
            if not candidates:
                raise TokenError("unknown-key", f"no trusted app uses {alg}")
        for app in candidates:
            payload = _open_with(token, alg, app.key)
            if payload is not None:
                return app, _claims(payload)
        if kid is not None:
            raise TokenError("forged", f"the signature does not match app {kid!r}")
        raise TokenError("unknown-key", "no trusted app's key opens this token")

    def _check(self, app: App, claims: dict[str, Any], now: float) -> Claims:
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise TokenError("bad-claims", "exp (a NumericDate) is required")
        if now > exp + self.leeway:
            raise TokenError("expired", f"expired {int(now - exp)} s ago")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and now + self.leeway < nbf:
            raise TokenError("not-yet-valid", "nbf is in the future")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + self.iat_leeway:
            raise TokenError("not-yet-valid", "iat is in the future")
        # Counted from now, so a future iat cannot stretch it; a past iat only shortens it.
        start = now if iat is None else min(now, iat)
        if exp - start > self.max_lifetime + self.leeway:
            raise TokenError("too-long-lived", f"tokens live at most {self.max_lifetime:g} s")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if app.audience not in audiences:
            raise TokenError("wrong-audience", f"aud must be {app.audience!r}")
        return Claims(
            app=app.name,
            jid=_user_jid(app, claims.get("sub")),
            name=_text(claims, "name"),
            role=_role(claims.get("role")),
            topics=_topics(claims),
            exp=exp,
            jti=_jti(claims.get("jti")),
            issued=iat if iat is not None else exp - self.max_lifetime,
        )


def _open_with(token: str, alg: str, key: Any) -> bytes | None:
    """The payload if `key` verifies/decrypts the token, else None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's SecurityWarning for the name EdDSA
        try:
            if alg in ENCRYPTING:
                return jwe.decrypt_compact(token, key, algorithms=[alg, "A128GCM"]).plaintext
            return jws.deserialize_compact(token, key, algorithms=[alg]).payload
        except (JoseError, ValueError, TypeError):
            return None


# NumericDates (RFC 7519 §2) we take: finite, not before 1970, not after the year 9999.
LATEST_DATE = 253_402_300_799


def _numeric_date(claims: dict[str, Any], key: str) -> float | None:
    """The claim as seconds since the epoch; None if absent; TokenError if implausible.
    A bool is an int in Python, a huge int overflows float, and 1e400 parses as inf."""
    if key not in claims:
        return None
    value = claims[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("bad-claims", f"{key} must be a NumericDate")
    if not 0 <= value <= LATEST_DATE:  # also false for NaN, and bounds ints before float()
        raise TokenError("bad-claims", f"{key} is not a plausible NumericDate")
    return float(value)


def _jti(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
        raise TokenError("bad-claims", "jti must be a string of 1 to 256 characters")
    return value


def _strict_json(data: bytes | str) -> Any:
    """json.loads without Python's NaN/Infinity/-Infinity extension (not JSON, RFC 8259)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


def _claims(payload: bytes | None) -> dict[str, Any]:
    try:
        claims = _strict_json(payload or b"")
    except ValueError:
        raise TokenError("malformed", "the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed", "the payload is not a JSON object")
    return claims


def _user_jid(app: App, sub: Any) -> str:
    from xmppd.protocol.jid import JID, JIDError

    if not isinstance(sub, str) or not sub:
        raise TokenError("bad-claims", "sub (a user id or JID) is required")
    try:
        jid = JID.parse(sub if "@" in sub else f"{sub}@{app.domain}")
    except JIDError as exc:
        raise TokenError("bad-claims", f"sub is not a usable JID: {exc}") from None
    if jid.resource is not None or jid.domain != app.domain or not jid.local:
        raise TokenError("bad-claims", f"sub must be a user of {app.domain}")
    return str(jid)


def _text(claims: dict[str, Any], key: str) -> str:
    value = claims.get(key, "")
    if not isinstance(value, str) or len(value) > 256:
        raise TokenError("bad-claims", f"{key} must be a string of at most 256 characters")
    return value


def _role(value: Any) -> str:
    if value is None:
        return "user"
    if value not in ROLES:
        raise TokenError("bad-claims", f"role must be one of {', '.join(ROLES)}")
    return value


def _topics(claims: dict[str, Any]) -> tuple[str, ...]:
    topics, rooms = claims.get("topics", []), claims.get("rooms", [])
    for key, value in (("topics", topics), ("rooms", rooms)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TokenError("bad-claims", f"{key} must be a list of strings")
        if len(value) > 100:
            raise TokenError("bad-claims", f"at most 100 {key}")
    return tuple(topics) + tuple(f"room:{r}" for r in rooms)


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---- revocation ----------------------------------------------------------------------------


@dataclass(slots=True)
class Revocations:
    """Tokens a host app revoked: by id (`jti`), or every token of a user issued before a
    moment. Each entry has an `until` (epoch seconds) after which the tokens it covers would be
    refused as expired anyway, so it can be forgotten. Kept durable by xmppd/tokens.py."""

    jtis: dict[str, float] = field(default_factory=dict)  # jti -> until
    users: dict[str, tuple[float, float]] = field(default_factory=dict)  # JID -> (before, until)

    def revoked(self, claims: Claims, now: float) -> bool:
        if claims.jti is not None and self.jtis.get(claims.jti, 0.0) > now:
            return True
        before, until = self.users.get(claims.jid, (0.0, 0.0))
        return until > now and claims.issued < before

    def add_jti(self, jti: str, until: float) -> float:
        until = max(until, self.jtis.get(jti, 0.0))
        self.jtis[jti] = until
        return until

    def add_user(self, jid: str, before: float, until: float) -> tuple[float, float]:
        old_before, old_until = self.users.get(jid, (0.0, 0.0))
        entry = (max(before, old_before), max(until, old_until))
        self.users[jid] = entry
        return entry

    def prune(self, now: float) -> tuple[list[str], list[str]]:
        """Forget entries past their `until`; the jtis and users forgotten."""
        jtis = [jti for jti, until in self.jtis.items() if until <= now]
        users = [jid for jid, (_, until) in self.users.items() if until <= now]
        for jti in jtis:
            del self.jtis[jti]
        for jid in users:
            del self.users[jid]
        return jtis, users


# ---- short-lived XMPP passwords -------------------------------------------------------------


class CredentialStore:
    """One-time XMPP passwords bought with a token (the Converse.js `credentials_url` flow).

    Kept in memory (a restart voids them: they live `lifetime` seconds anyway, never past their
    token's `exp`), hashed, at most `per_user` live at once per account; a password works for
    one login only, and revoking its token (by jti or user) voids it."""

    def __init__(self, lifetime: float = 60.0, per_user: int = 5) -> None:
        self.lifetime = lifetime
        self.per_user = per_user
        # bare JID -> (digest, expiry on the monotonic clock, the token's jti)
        self._live: dict[str, list[tuple[bytes, float, str | None]]] = {}

    def issue(
        self,
        bare: str,
        now: float | None = None,
        *,
        ttl: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A new password for `bare`; `ttl` caps its life (the token's remaining seconds)."""
        now = time.monotonic() if now is None else now
        secret = secrets.token_urlsafe(24)
        live = [e for e in self._live.get(bare, []) if e[1] > now][-(self.per_user - 1) :]
        life = self.lifetime if ttl is None else max(0.0, min(self.lifetime, ttl))
        live.append((_digest(secret), now + life, jti))
        self._live[bare] = live
        return secret

    def consume(self, bare: str, password: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        live = [e for e in self._live.pop(bare, []) if e[1] > now]
        digest = _digest(password)
        match = next((e for e in live if hmac.compare_digest(e[0], digest)), None)
        if match is not None:
            live.remove(match)
        if live:
            self._live[bare] = live
        return match is not None

    def revoke(self, *, jti: str | None = None, user: str | None = None) -> int:
        """Void the passwords bought with token `jti`, or all of `user`'s; how many."""
        count = 0
        if user is not None:
            count += len(self._live.pop(user, []))
        if jti is not None:
            for bare, live in list(self._live.items()):
                kept = [e for e in live if e[2] != jti]
                count += len(live) - len(kept)
                if kept:
                    self._live[bare] = kept
                else:
                    del self._live[bare]
        return count


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenAuth:
    """An auth backend wrapper: a live one-time password logs in (SASL PLAIN), anything else is
    the wrapped backend's business. SCRAM keeps working for real passwords.

    Token users have no account in the wrapped backend, yet they are users: the host app
    vouched for them. `vouch` records each one durably (the `vouched` keyval store, one small
    document per user) when a token opens a channel or a token-issued password logs in, and
    `user_exists` answers true for them from then on (room history stays shown after they go
    offline; messages to them are kept like anyone's). `delete_user` forgets them."""

    def __init__(
        self, inner: Any, store: CredentialStore, domain: str, vouched: Any | None = None
    ) -> None:
        self.inner = inner
        self.store = store
        self.domain = domain
        self.vouched = vouched  # a KeyValueStore: username -> {"since": epoch seconds}
        self._known: set[str] = set()  # vouched-for usernames seen since start
        self.name = f"{inner.name}+tokens"
        self.supports_scram = inner.supports_scram

    async def check_password(self, username: str, password: str) -> bool:
        if self.store.consume(f"{username}@{self.domain}", password):
            log.info("%s@%s logged in with a token-issued password", username, self.domain)
            await self.vouch(username)
            return True
        return await self.inner.check_password(username, password)

    async def vouch(self, username: str) -> None:
        """A valid host-app token named this user: remember it (durably) as existing."""
        if username in self._known or self.vouched is None:
            return
        if await self._load(username) is None:
            await self._store(username, {"since": int(time.time())})
        self._known.add(username)

    async def user_exists(self, username: str) -> bool:
        if username in self._known or await self.inner.user_exists(username):
            return True
        return self.vouched is not None and await self._load(username) is not None

    async def delete_user(self, username: str) -> None:
        """Forget a token user (its app deleted it) and delete an account of that name;
        NoSuchUser when there is neither."""
        vouched = self.vouched is not None and await self._load(username) is not None
        if vouched:
            await self._store(username, None)
            self._known.discard(username)
        if not vouched or await self.inner.user_exists(username):
            await self.inner.delete_user(username)

    async def _load(self, username: str) -> dict | None:
        try:
            doc = await self.vouched.get(username)
        except StorageError as exc:
            raise AuthError(f"token user store unavailable: {exc}") from exc
        if doc is not None:
            self._known.add(username)
        return doc

    async def _store(self, username: str, doc: dict | None) -> None:
        try:
            await self.vouched.set(username, doc)
        except StorageError as exc:
            raise AuthError(f"token user store unavailable: {exc}") from exc

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        return await self.inner.get_scram_credentials(username, hash_name)

    def __getattr__(self, name: str) -> Any:  # create_user, set_password, ... unchanged
        return getattr(self.inner, name)
