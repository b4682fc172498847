"""SCRAM key derivation (RFC 5802, RFC 7677): pure functions, no I/O.

Accounts store, per hash, the salt, the iteration count, StoredKey and ServerKey. With those the
server runs a SCRAM exchange with only HMACs per login and never needs the plaintext password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

# SASL mechanism hash name -> hashlib name
HASHES: dict[str, str] = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
DEFAULT_ITERATIONS = 10_000
SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "salt": self.salt.hex(),
            "iterations": self.iterations,
            "stored_key": self.stored_key.hex(),
            "server_key": self.server_key.hex(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ScramCredentials:
        return cls(
            salt=bytes.fromhex(str(data["salt"])),
            iterations=int(data["iterations"]),  # type: ignore[arg-type]
            stored_key=bytes.fromhex(str(data["stored_key"])),
            server_key=bytes.fromhex(str(data["server_key"])),
        )


def hmac_digest(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, HASHES[hash_name]).digest()


def hash_digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(HASHES[hash_name], data).digest()


def salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    # The password is expected to be SASLprep/OpaqueString-prepared by the caller.
    return hashlib.pbkdf2_hmac(HASHES[hash_name], password.encode("utf-8"), salt, iterations)


def client_key(hash_name: str, salted: bytes) -> bytes:
    return hmac_digest(hash_name, salted, b"Client Key")


def derive_credentials(
    hash_name: str,
    password: str,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ScramCredentials:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = salted_password(hash_name, password, salt, iterations)
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hash_digest(hash_name, client_key(hash_name, salted)),
        server_key=hmac_digest(hash_name, salted, b"Server Key"),
    )


def verify_password(hash_name: str, password: str, creds: ScramCredentials) -> bool:
    """Check a plaintext password (SASL PLAIN) against stored SCRAM keys."""
    candidate = derive_credentials(hash_name, password, creds.salt, creds.iterations)
    return hmac.compare_digest(candidate.stored_key, creds.stored_key)
