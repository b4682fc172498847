"""XMPP addresses (RFC 7622): parse, prepare, compare. Pure functions, no I/O.

Preparation: localpart with the PRECIS UsernameCaseMapped profile plus the RFC 7622 §3.3.1
exclusions, resourcepart with OpaqueString, domainpart with UTS #46 mapping + IDNA2008 to its
U-label form (IP literals allowed). ASCII-only parts, by far the most common, take a fast path
whose result is identical to the full profile's; everything else goes through precis_i18n/idna.
The router parses every `to`/`from`, so `JID.parse` is memoised (bounded LRU).
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna
import precis_i18n

MAX_PART_BYTES = 1023
# Refuse absurd input before running the (slow, pure-Python) profiles on it. Preparation can
# shrink a string (NFC), so the exact byte limit is checked on the prepared form.
_MAX_RAW_CHARS = 4 * MAX_PART_BYTES

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")

_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
# ASCII localpart: IdentifierClass allows %x21-7E; RFC 7622 §3.3.1 removes "&'/:<>@
_ASCII_LOCAL = re.compile(r"[\x21\x23-\x25\x28-\x2e\x30-\x39\x3b\x3d\x3f\x41-\x7e]+")
# ASCII resourcepart: FreeformClass allows %x20-7E, OpaqueString maps nothing there
_ASCII_RESOURCE = re.compile(r"[\x20-\x7e]+")
_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ASCII_DOMAIN = re.compile(rf"{_LDH_LABEL}(?:\.{_LDH_LABEL})*")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")


class JIDError(ValueError):
    """The text is not a valid XMPP address; the message says which part and why."""


def _check_bytes(value: str, part: str) -> str:
    if len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise JIDError(f"{part} too long (max {MAX_PART_BYTES} bytes)")
    return value


def _precis_error(exc: UnicodeError, part: str) -> JIDError:
    reason = getattr(exc, "reason", str(exc))
    if reason == "empty":
        return JIDError(f"{part} is empty")
    obj, start = getattr(exc, "object", ""), getattr(exc, "start", 0)
    if isinstance(obj, str) and 0 <= start < len(obj):
        return JIDError(f"invalid character U+{ord(obj[start]):04X} in {part} ({reason})")
    return JIDError(f"invalid {part} ({reason})")


def prep_localpart(s: str) -> str:
    """UsernameCaseMapped + RFC 7622 §3.3.1; raises JIDError."""
    if not s:
        raise JIDError("localpart is empty")
    if len(s) > _MAX_RAW_CHARS:
        raise JIDError(f"localpart too long (max {MAX_PART_BYTES} bytes)")
    if _ASCII_LOCAL.fullmatch(s):
        return _check_bytes(s.lower(), "localpart")
    try:
        prepared = _USERNAME.enforce(s)
    except UnicodeError as exc:
        raise _precis_error(exc, "localpart") from None
    bad = next((c for c in prepared if c in _LOCAL_FORBIDDEN), None)
    if bad is not None:
        raise JIDError(f"invalid character {bad!r} in localpart")
    return _check_bytes(prepared, "localpart")


def prep_resource(s: str) -> str:
    """OpaqueString (RFC 7622 §3.4); raises JIDError."""
    if not s:
        raise JIDError("resourcepart is empty")
    if len(s) > _MAX_RAW_CHARS:
        raise JIDError(f"resourcepart too long (max {MAX_PART_BYTES} bytes)")
    if _ASCII_RESOURCE.fullmatch(s):
        return _check_bytes(s, "resourcepart")
    try:
        prepared = _OPAQUE.enforce(s)
    except UnicodeError as exc:
        raise _precis_error(exc, "resourcepart") from None
    return _check_bytes(prepared, "resourcepart")


def _prep_ip_literal(s: str) -> str:
    try:
        addr = ipaddress.IPv6Address(s[1:-1]) if s.endswith("]") else None
    except ValueError:
        addr = None
    if addr is None or addr.scope_id is not None:
        raise JIDError("invalid IPv6 literal in domainpart")
    return f"[{addr.compressed}]"


def prep_domain(s: str) -> str:
    """IDNA2008 (UTS #46 mapping) to U-labels, lowercase, no trailing dot; IP literals kept."""
    if not s:
        raise JIDError("domainpart is empty")
    if len(s) > _MAX_RAW_CHARS:
        raise JIDError(f"domainpart too long (max {MAX_PART_BYTES} bytes)")
    if s[0] == "[":
        return _prep_ip_literal(s)
    low = s[:-1].lower() if s[-1] == "." else s.lower()
    if _DOTTED_NUMBERS.fullmatch(low) and low.count(".") == 3:
        try:
            return str(ipaddress.IPv4Address(low))
        except ValueError:
            raise JIDError("invalid IPv4 literal in domainpart") from None
    if _ASCII_DOMAIN.fullmatch(low) and "xn--" not in low:
        return _check_bytes(low, "domainpart")
    try:
        # uts46 maps width/case and ideographic full stops before the IDNA2008 checks
        ulabel = idna.decode(idna.encode(s, uts46=True, transitional=False))
    except (idna.IDNAError, UnicodeError) as exc:
        raise JIDError(f"invalid domainpart ({exc})") from None
    ulabel = ulabel.removesuffix(".")
    if not ulabel:
        raise JIDError("domainpart is empty")
    return _check_bytes(ulabel, "domainpart")


class JID:
    """An immutable, prepared XMPP address. Compare and hash on the prepared parts."""

    __slots__ = ("local", "domain", "resource", "_str", "_hash")

    local: str | None
    domain: str
    resource: str | None

    def __init__(
        self,
        local: str | None,
        domain: str,
        resource: str | None = None,
        *,
        prepared: bool = False,
    ) -> None:
        if not prepared:
            local = None if local is None else prep_localpart(local)
            domain = prep_domain(domain)
            resource = None if resource is None else prep_resource(resource)
        _set = object.__setattr__
        _set(self, "local", local)
        _set(self, "domain", domain)
        _set(self, "resource", resource)
        _set(self, "_str", None)
        _set(self, "_hash", None)

    @classmethod
    def parse(cls, text: str) -> JID:
        """Split and prepare `text` (RFC 7622 §3.1); raises JIDError. Memoised."""
        if not isinstance(text, str):
            raise TypeError(f"JID text must be str, not {type(text).__name__}")
        return _parse_cached(text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("JID is immutable")

    @property
    def bare(self) -> JID:
        if self.resource is None:
            return self
        return JID(self.local, self.domain, prepared=True)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        """A plain server/component address: no localpart, no resourcepart."""
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, prep_resource(resource), prepared=True)

    def __str__(self) -> str:
        text = self._str
        if text is None:
            text = self.domain
            if self.local is not None:
                text = f"{self.local}@{text}"
            if self.resource is not None:
                text = f"{text}/{self.resource}"
            object.__setattr__(self, "_str", text)
        return text

    def __repr__(self) -> str:
        return f"JID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JID):
            return NotImplemented
        return (
            self.local == other.local
            and self.domain == other.domain
            and self.resource == other.resource
        )

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self.local, self.domain, self.resource))
            object.__setattr__(self, "_hash", h)
        return h

    def __reduce__(self) -> tuple[object, tuple[str | None, str, str | None]]:
        return (_from_prepared, (self.local, self.domain, self.resource))

    def __copy__(self) -> JID:
        return self

    def __deepcopy__(self, memo: object) -> JID:
        return self


def _from_prepared(local: str | None, domain: str, resource: str | None) -> JID:
    return JID(local, domain, resource, prepared=True)


def _parse(text: str) -> JID:
    if len(text) > 3 * _MAX_RAW_CHARS + 2:
        raise JIDError("JID too long")
    # RFC 7622 §3.1: the first "/" starts the resource (which may hold "/" and "@"),
    # then the first "@" before it ends the localpart.
    local = resource = None
    head, slash, tail = text.partition("/")
    if slash:
        if not tail:
            raise JIDError("resourcepart is empty")
        resource = tail
    domain = head
    at = head.find("@")
    if at >= 0:
        local, domain = head[:at], head[at + 1 :]
        if not local:
            raise JIDError("localpart is empty")
    if not domain:
        raise JIDError("domainpart is empty")
    return JID(local, domain, resource)


_parse_cached = functools.lru_cache(maxsize=10_000)(_parse)
