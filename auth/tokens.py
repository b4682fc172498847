"""Host-application tokens: a trusted web app vouches for its user without a password.

The app signs (JWS: HS256, RS256, EdDSA) or encrypts (JWE: A128GCMKW + A128GCM, the compact
form Planga uses with a shared key) a JSON claim set:

* `sub`   user id ("alice" -> alice@<app domain>) or a bare JID of one of the app's domains
* `exp`   required; tokens live at most `max_lifetime` seconds (`iat` when given, else now)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, OKPKey, RSAKey

from auth.scram import ScramCredentials

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
        "max_lifetime": Option(float, 86400.0, "longest exp - iat a token may ask for", min=1),
        "credentials_lifetime": Option(
            float, 60.0, "seconds a password from /credentials stays usable", min=5, max=3600
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
    wrong-audience, too-long-lived, bad-claims."""

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
        self.max_lifetime: float = settings.get("max_lifetime", 86400)
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
            app, claims = self._open(token.strip())
            return self._check(app, claims, time.time() if now is None else now)
        except TokenError as exc:
            log.warning("refused a host-app token%s: %s", f" from {peer}" if peer else "", exc)
            raise

    def _open(self, token: str) -> tuple[App, dict[str, Any]]:
        parts = token.split(".")
        if len(parts) not in (3, 5):
            raise TokenError("malformed", "not a compact JWS or JWE")
        try:
            header = json.loads(_b64(parts[0]))
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
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenError("bad-claims", "exp (a NumericDate) is required")
        if now > exp + self.leeway:
            raise TokenError("expired", f"expired {int(now - exp)} s ago")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now + self.leeway < nbf:
            raise TokenError("not-yet-valid", "nbf is in the future")
        iat = claims.get("iat")
        start = iat if isinstance(iat, int | float) else now
        if exp - start > self.max_lifetime:
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
            exp=float(exp),
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


def _claims(payload: bytes | None) -> dict[str, Any]:
    try:
        claims = json.loads(payload or b"")
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


# ---- short-lived XMPP passwords -------------------------------------------------------------


class CredentialStore:
    """One-time XMPP passwords bought with a token (the Converse.js `credentials_url` flow).

    Kept in memory (a restart voids them: they live `lifetime` seconds anyway), hashed, at
    most `per_user` live at once per account; a password works for one login only."""

    def __init__(self, lifetime: float = 60.0, per_user: int = 5) -> None:
        self.lifetime = lifetime
        self.per_user = per_user
        self._live: dict[str, list[tuple[bytes, float]]] = {}  # bare JID -> (digest, expiry)

    def issue(self, bare: str, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        secret = secrets.token_urlsafe(24)
        live = [e for e in self._live.get(bare, []) if e[1] > now][-(self.per_user - 1) :]
        live.append((_digest(secret), now + self.lifetime))
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

    def revoke(self, bare: str) -> None:
        """Void the account's live passwords (deleted account, password changed)."""
        self._live.pop(bare, None)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenAuth:
    """An auth backend wrapper: a live one-time password logs in (SASL PLAIN), anything else is
    the wrapped backend's business. SCRAM keeps working for real passwords."""

    def __init__(self, inner: Any, store: CredentialStore, domain: str) -> None:
        self.inner = inner
        self.store = store
        self.domain = domain
        self.name = f"{inner.name}+tokens"
        self.supports_scram = inner.supports_scram

    async def check_password(self, username: str, password: str) -> bool:
        if self.store.consume(f"{username}@{self.domain}", password):
            log.info("%s@%s logged in with a token-issued password", username, self.domain)
            return True
        return await self.inner.check_password(username, password)

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        return await self.inner.get_scram_credentials(username, hash_name)

    def __getattr__(self, name: str) -> Any:  # user_exists, create_user, ... unchanged
        return getattr(self.inner, name)
