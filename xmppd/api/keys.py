"""API keys: the `[api]` options, hashing, and checking a presented key in constant time.

A key is 32 random bytes (`xmppd api-key` makes one and prints its hash for the config). The
config holds only `sha256:<hex>` of the key: keys are random, not chosen by people, so one
fast hash is as strong as a password hash here and costs nothing per request (a slow hash
would make every API call, and every guess, cost the server tens of milliseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any

from ..options import Option, Schema, SourceMap, validate

SCOPES = ("read", "users", "rooms", "moderation", "post", "hooks", "admin")
PREFIX = "xak_"
HASH_PREFIX = "sha256:"

SCHEMA: Schema = {
    "allow": Option(
        list, ["127.0.0.1/32", "::1/128"], "client addresses/networks the API answers (CIDR)"
    ),
    "requests_per_second": Option(float, 20.0, "requests per second per key", min=0.1),
    "burst": Option(int, 50, "requests a key may make at once", min=1),
    "max_body_bytes": Option(int, 65536, "max bytes of a request body", min=1024),
    "request_timeout": Option(float, 30.0, "seconds one request may run", min=1),
    "keys": Option(dict, {}, "API keys, one [api.keys.<name>] table each (docs/api.md)"),
}
KEY_SCHEMA: Schema = {
    "hash": Option(str, "", "the key's hash, from `xmppd api-key`"),
    "scopes": Option(list, ["read"], "what the key may do: " + ", ".join(SCOPES)),
}


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def new_key() -> tuple[str, str]:
    """(key to give the client, hash for the config)."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def check_config(api: dict[str, Any], source: SourceMap) -> None:
    """Validate `[api.keys.*]` and `allow` in place; keys become `ApiKey`s."""
    for i, cidr in enumerate(api["allow"]):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise source.error("api.allow", f"entry {i + 1}: {exc}") from None
    keys = {}
    for name, table in api["keys"].items():
        prefix = f"api.keys.{name}"
        values = validate(table, KEY_SCHEMA, prefix, source)
        digest = values["hash"]
        if not digest.startswith(HASH_PREFIX) or len(digest) != len(HASH_PREFIX) + 64:
            raise source.error(f"{prefix}.hash", "expected sha256:<64 hex digits> (xmppd api-key)")
        try:
            raw = bytes.fromhex(digest[len(HASH_PREFIX) :])
        except ValueError:
            raise source.error(f"{prefix}.hash", "not hexadecimal") from None
        unknown = [s for s in values["scopes"] if s not in SCOPES]
        if unknown or not values["scopes"]:
            raise source.error(f"{prefix}.scopes", f"scopes are some of {', '.join(SCOPES)}")
        keys[name] = ApiKey(name, raw, frozenset(values["scopes"]))
    api["keys"] = keys


def find_key(keys: dict[str, ApiKey], presented: str) -> ApiKey | None:
    """The key whose hash matches; every key is compared (constant time), none skipped."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in keys.values():
        if hmac.compare_digest(digest, key.digest):
            found = key
    return found
