"""Accounts kept in our own storage, as SCRAM keys (RFC 5802 / RFC 7677), never plaintext.

Record in the keyval store "accounts", one per user:
    {"scram": {"SHA-1": {...}, "SHA-256": {...}, "SHA-512": {...}}, "created": <unix ts>}
Accounts imported from other servers may carry instead a legacy `"password_hash"` (a passlib
hash string), or SCRAM keys for only some hashes (XEP-0227 files from Prosody or ejabberd: SHA-1);
the first successful PLAIN login replaces the hash, or adds the missing SCRAM keys.

Key derivation (PBKDF2) happens only when a password is set or checked in plaintext, always in
a worker thread; `get_scram_credentials` is a store read, so a SCRAM login costs only HMACs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import precis_i18n
import trio
from passlib.context import CryptContext

from auth.base import AuthBackend, AuthError, NoSuchUser, UserExists
from auth.scram import DEFAULT_ITERATIONS, HASHES, ScramCredentials, derive_credentials
from auth.scram import verify_password as verify_scram
from xmppd.storage import StorageError
from xmppd.storage.base import Document, KeyValueStore

log = logging.getLogger(__name__)
T = TypeVar("T")

ACCOUNTS_STORE = "accounts"
# Which stored keys check a plaintext password; any one suffices, all come from one password.
_CHECK_ORDER = ("SHA-256", "SHA-512", "SHA-1")
_OPAQUE_STRING = precis_i18n.get_profile("OpaqueString")


def prepare_password(password: str) -> str:
    """PRECIS OpaqueString (RFC 8265), as the SASL layer prepares what clients send."""
    if not isinstance(password, str):
        raise ValueError("password refused: not a string")
    try:
        return _OPAQUE_STRING.enforce(password)
    except UnicodeError as exc:  # precis_i18n raises UnicodeEncodeError with a reason
        raise ValueError(f"password refused: {getattr(exc, 'reason', exc)}") from exc


def _has_backend(scheme: str) -> bool:
    import passlib.hash

    try:
        return bool(getattr(passlib.hash, scheme).has_backend())
    except Exception:  # some bcrypt releases break passlib's backend self-test
        return False


_legacy_context: CryptContext | None = None


def legacy_context() -> CryptContext:
    """Schemes other servers commonly export; bcrypt/argon2 only when their library exists."""
    global _legacy_context
    if _legacy_context is None:
        schemes = ["sha512_crypt", "sha256_crypt", "pbkdf2_sha512", "pbkdf2_sha256"]
        schemes = [s for s in ("bcrypt", "argon2") if _has_backend(s)] + schemes
        _legacy_context = CryptContext(schemes=schemes)
    return _legacy_context


def _verify_legacy(candidates: Iterable[str], password_hash: str) -> bool:
    ctx = legacy_context()
    try:
        return any(ctx.verify(pw, password_hash) for pw in candidates)
    except ValueError as exc:  # unknown scheme or malformed hash: an admin must look
        raise AuthError(f"cannot verify imported password hash: {exc}") from exc


class InternalAuth(AuthBackend):
    """SCRAM-capable accounts in a `KeyValueStore`; one instance per virtual host."""

    name = "internal"
    supports_scram = True

    def __init__(
        self,
        store: KeyValueStore,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        hashes: Iterable[str] = tuple(HASHES),
        kdf_limiter: trio.CapacityLimiter | None = None,
    ):
        self._store = store
        self._iterations = iterations
        self._hashes = tuple(hashes)
        unknown = set(self._hashes) - set(HASHES)
        if unknown or not self._hashes:
            raise ValueError(f"SCRAM hashes must be among {sorted(HASHES)}, got {self._hashes}")
        # Bounds CPU spent on PBKDF2 (a burst of registrations must not take every thread).
        self._kdf_limiter = kdf_limiter or trio.CapacityLimiter(os.cpu_count() or 1)
        # Serialises read-modify-write of records in this process (create vs create, etc.).
        self._lock = trio.Lock()

    # -- AuthBackend --------------------------------------------------------------------------

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        if hash_name not in HASHES:
            raise ValueError(f"unknown SCRAM hash {hash_name!r}")
        record = await self._load(username)
        data = None if record is None else (record.get("scram") or {}).get(hash_name)
        return None if data is None else ScramCredentials.from_dict(data)

    async def check_password(self, username: str, password: str) -> bool:
        try:
            prepared = prepare_password(password)
        except ValueError:
            return False  # nothing unpreparable was ever stored
        record = await self._load(username)
        if record is None:
            # Same cost as a real check, so timing does not tell which accounts exist.
            dummy = ScramCredentials(bytes(16), self._iterations, b"", b"")
            await self._kdf(verify_scram, "SHA-256", prepared, dummy)
            return False
        scram = record.get("scram") or {}
        for hash_name in _CHECK_ORDER:
            if hash_name in scram:
                creds = ScramCredentials.from_dict(scram[hash_name])
                ok = await self._kdf(verify_scram, hash_name, prepared, creds)
                if ok and not set(self._hashes) <= set(scram):  # imported with fewer hashes
                    await self._complete_scram(username, scram, prepared)
                return ok
        legacy = record.get("password_hash")
        if not isinstance(legacy, str):
            return False
        # Other servers may have hashed the raw password: try it too if preparation changed it.
        candidates = dict.fromkeys((prepared, password))
        if not await self._kdf(_verify_legacy, candidates, legacy):
            return False
        await self._upgrade_legacy(username, legacy, prepared)
        return True

    async def user_exists(self, username: str) -> bool:
        return await self._load(username) is not None

    async def create_user(self, username: str, password: str) -> None:
        if not username:
            raise ValueError("empty username")
        prepared = prepare_password(password)
        if await self.user_exists(username):  # fail before spending PBKDF2 time
            raise UserExists(username)
        scram = await self._derive_all(prepared)
        async with self._lock:
            if await self._load(username) is not None:
                raise UserExists(username)
            await self._save(username, {"scram": scram, "created": int(time.time())})

    async def set_password(self, username: str, password: str) -> None:
        prepared = prepare_password(password)
        if not await self.user_exists(username):
            raise NoSuchUser(username)
        scram = await self._derive_all(prepared)
        async with self._lock:
            record = await self._load(username)
            if record is None:
                raise NoSuchUser(username)
            await self._save(username, _with_scram(record, scram))

    async def delete_user(self, username: str) -> None:
        async with self._lock:
            if await self._load(username) is None:
                raise NoSuchUser(username)
            await self._save(username, None)

    async def list_users(self) -> list[str]:
        try:
            return await self._store.users()
        except StorageError as exc:
            raise AuthError(f"account store unavailable: {exc}") from exc

    # -- helpers ------------------------------------------------------------------------------

    async def _upgrade_legacy(self, username: str, legacy: str, prepared: str) -> None:
        scram = await self._derive_all(prepared)
        try:
            async with self._lock:
                record = await self._load(username)
                # Only if nothing changed meanwhile (a concurrent set_password wins).
                if record is not None and record.get("password_hash") == legacy:
                    await self._save(username, _with_scram(record, scram))
        except AuthError as exc:
            # The login itself succeeded; the next one retries the upgrade.
            log.warning("could not upgrade imported password hash of %r: %s", username, exc)

    async def _complete_scram(self, username: str, scram: dict[str, Any], prepared: str) -> None:
        """Keys for every configured hash, for an account imported with only some (XEP-0227
        files from Prosody or ejabberd carry SCRAM-SHA-1 only)."""
        fresh = await self._derive_all(prepared)
        try:
            async with self._lock:
                record = await self._load(username)
                if record is not None and record.get("scram") == scram:  # unchanged meanwhile
                    await self._save(username, _with_scram(record, {**fresh, **scram}))
        except AuthError as exc:
            log.warning("could not add SCRAM hashes for %r: %s", username, exc)

    async def _derive_all(self, prepared: str) -> dict[str, Any]:
        def derive() -> dict[str, Any]:
            return {
                h: derive_credentials(h, prepared, iterations=self._iterations).to_dict()
                for h in self._hashes
            }

        return await self._kdf(derive)

    async def _kdf(self, fn: Callable[..., T], *args: Any) -> T:
        # hashlib's PBKDF2 releases the GIL, so the trio loop keeps running meanwhile.
        return await trio.to_thread.run_sync(fn, *args, limiter=self._kdf_limiter)

    async def _load(self, username: str) -> Document | None:
        try:
            return await self._store.get(username)
        except StorageError as exc:
            raise AuthError(f"account store unavailable: {exc}") from exc

    async def _save(self, username: str, record: Document | None) -> None:
        try:
            await self._store.set(username, record)
        except StorageError as exc:
            raise AuthError(f"account store unavailable: {exc}") from exc


def _with_scram(record: Document, scram: dict[str, Any]) -> Document:
    """The record with fresh SCRAM keys and without any legacy hash."""
    updated = {k: v for k, v in record.items() if k != "password_hash"}
    updated["scram"] = scram
    return updated
