"""SASL server for XMPP (RFC 6120 §6), sans-IO: SCRAM-SHA-* (+ -PLUS) and PLAIN.

No I/O and no awaits. The caller feeds decoded payloads in and gets an Outcome back. When the
exchange needs the account store it returns a request (NeedScramCredentials, NeedPasswordCheck);
the caller looks the account up however it likes and hands the answer back
(provide_credentials, password_checked). Every peer-supplied byte is validated: a bad message
ends the exchange with Failure("malformed-request"), it never raises.

SCRAM (RFC 5802, RFC 7677) runs on stored keys (auth/scram.py): only HMACs per login. For an
unknown account the exchange continues with a salt and keys derived from a per-server secret,
so the challenge looks like a real one and the failure only comes at the proof.
Channel binding is tls-server-end-point (RFC 5929 §4), the one Python's ssl lets us compute.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from dataclasses import dataclass

import precis_i18n
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import SignatureAlgorithmOID

from auth.scram import (
    DEFAULT_ITERATIONS,
    SALT_BYTES,
    ScramCredentials,
    hash_digest,
    hmac_digest,
)
from xmppd.protocol.jid import JID, JIDError, prep_domain, prep_localpart

CB_TYPE = "tls-server-end-point"
# strongest first (RFC 6120 §6.3.3: order of preference)
SCRAM_MECHANISMS: dict[str, tuple[str, bool]] = {
    "SCRAM-SHA-512-PLUS": ("SHA-512", True),
    "SCRAM-SHA-256-PLUS": ("SHA-256", True),
    "SCRAM-SHA-1-PLUS": ("SHA-1", True),
    "SCRAM-SHA-512": ("SHA-512", False),
    "SCRAM-SHA-256": ("SHA-256", False),
    "SCRAM-SHA-1": ("SHA-1", False),
}
FAILURE_CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)
MAX_MESSAGE_BYTES = 8192  # far above any honest SCRAM/PLAIN message
_PROCESS_SECRET = secrets.token_bytes(32)  # fallback when the server configures none

_OPAQUE = precis_i18n.get_profile("OpaqueString")
_CB_FLAG = re.compile(r"p=[A-Za-z0-9.-]+")
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII except ","
_EXTENSION = re.compile(r"[A-Za-z]=[^\x00]+")
_SASLNAME_BAD_ESCAPE = re.compile(r"=(?!2C|3D)")
_SASLNAME_ESCAPE = re.compile(r"=(2C|3D)")


class SASLError(Exception):
    """A SASL failure with its RFC 6120 §6.5 condition name."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(slots=True)
class Challenge:
    data: bytes


@dataclass(slots=True)
class Success:
    data: bytes | None  # additional data with success (RFC 6120 §6.3.10), e.g. SCRAM "v="
    username: str  # prepared localpart
    authzid: str | None  # prepared bare JID, only when the client sent one


@dataclass(slots=True)
class Failure:
    condition: str
    text: str = ""


@dataclass(slots=True)
class NeedScramCredentials:
    username: str
    hash_name: str  # key of auth.scram.HASHES


@dataclass(slots=True)
class NeedPasswordCheck:
    username: str
    password: str  # OpaqueString-prepared
    authzid: str | None


Outcome = Challenge | Success | Failure | NeedScramCredentials | NeedPasswordCheck


# -- payload encoding (RFC 6120 §6.4.2) ----------------------------------------------------------


def _strict_b64(text: str) -> bytes | None:
    """RFC 4648 §4 base64 with no whitespace, correct padding and zero pad bits."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def decode_payload(text: str | None) -> bytes:
    """Element text -> bytes. "=" is the explicit empty response; absent text is b"" too."""
    if not text or text == "=":
        return b""
    raw = _strict_b64(text)
    if raw is None:
        raise SASLError("incorrect-encoding")
    return raw


def encode_payload(data: bytes | None) -> str:
    """bytes -> element text: b"" becomes "=", None (no data at all) an empty element."""
    if data is None:
        return ""
    return base64.b64encode(data).decode("ascii") if data else "="


# -- channel binding (RFC 5929 §4.1) -------------------------------------------------------------


def _end_point_hash(cert: x509.Certificate) -> hashes.HashAlgorithm:
    oid = cert.signature_algorithm_oid
    # RFC 5929 names no hash for EdDSA; follow OpenSSL (X509_digest_sig) / RFC 8419 so that
    # clients built on OpenSSL compute the same value.
    if oid == SignatureAlgorithmOID.ED25519:
        return hashes.SHA512()
    if oid == SignatureAlgorithmOID.ED448:
        return hashes.SHAKE256(64)
    try:
        algo = cert.signature_hash_algorithm  # RSASSA-PSS: the hash from its parameters
    except UnsupportedAlgorithm:
        algo = None
    if algo is None:
        raise ValueError(
            f"no tls-server-end-point hash for signature algorithm {oid.dotted_string}"
        )
    if isinstance(algo, hashes.MD5 | hashes.SHA1):
        return hashes.SHA256()  # RFC 5929 §4.1: MD5 and SHA-1 are upgraded
    return algo


def tls_server_end_point(cert_der: bytes) -> bytes:
    """Channel-binding data for our certificate; ValueError if its algorithm has no hash."""
    cert = x509.load_der_x509_certificate(cert_der)
    digest = hashes.Hash(_end_point_hash(cert))
    digest.update(cert_der)
    return digest.finalize()


# -- SCRAM message parsing (RFC 5802 §7) ---------------------------------------------------------


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("malformed-request", "not UTF-8") from None


def _decode_saslname(value: str) -> str:
    if not value or "\x00" in value or _SASLNAME_BAD_ESCAPE.search(value):
        raise SASLError("malformed-request", "invalid saslname")
    return _SASLNAME_ESCAPE.sub(lambda m: "," if m[1] == "2C" else "=", value)


def _check_extensions(attrs: list[str]) -> None:
    for attr in attrs:
        if not _EXTENSION.fullmatch(attr):
            raise SASLError("malformed-request", "invalid attribute")


def _parse_gs2(msg: str) -> tuple[str, str | None, str, str]:
    """client-first-message -> (cbind flag, authzid, gs2 header, client-first-message-bare)."""
    parts = msg.split(",", 2)
    if len(parts) != 3:
        raise SASLError("malformed-request", "missing GS2 header")
    flag, authz, bare = parts
    if flag not in ("n", "y") and not _CB_FLAG.fullmatch(flag):
        raise SASLError("malformed-request", "invalid channel-binding flag")
    authzid = None
    if authz:
        if not authz.startswith("a="):
            raise SASLError("malformed-request", "invalid authzid")
        authzid = _decode_saslname(authz[2:])
    return flag, authzid, f"{flag},{authz},", bare


def _parse_first_bare(bare: str) -> tuple[str, str]:
    """client-first-message-bare -> (username as sent, client nonce)."""
    attrs = bare.split(",")
    if attrs[0].startswith("m="):
        raise SASLError("malformed-request", "mandatory extensions are not supported")
    if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
        raise SASLError("malformed-request", "expected n= and r=")
    _check_extensions(attrs[2:])
    nonce = attrs[1][2:]
    if not _NONCE.fullmatch(nonce):
        raise SASLError("malformed-request", "invalid nonce")
    return _decode_saslname(attrs[0][2:]), nonce


def _parse_final(msg: str) -> tuple[str, str, str, str]:
    """client-final-message -> (without-proof part, c= value, r= value, p= value)."""
    without_proof, sep, proof = msg.rpartition(",p=")
    if not sep:
        raise SASLError("malformed-request", "missing proof")
    attrs = without_proof.split(",")
    if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
        raise SASLError("malformed-request", "expected c= and r=")
    _check_extensions(attrs[2:])
    return without_proof, attrs[0][2:], attrs[1][2:], proof


def _b64_field(value: str, what: str) -> bytes:
    raw = _strict_b64(value)
    if not raw:  # the grammar has no empty base64 values
        raise SASLError("malformed-request", f"invalid base64 in {what}")
    return raw


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


# -- the server ----------------------------------------------------------------------------------

_IDLE, _SUCCESS, _FAILURE = "idle", "success", "failure"
_PLAIN_INITIAL, _PLAIN_CHECK = "plain-initial", "plain-check"
_SCRAM_FIRST, _SCRAM_CREDS, _SCRAM_FINAL = "scram-first", "scram-creds", "scram-final"


class SASLServer:
    """One stream's SASL negotiation; a failed attempt may be followed by a new start()."""

    __slots__ = (
        "_domain",
        "_tls",
        "_cb_data",
        "_allow_plain_without_tls",
        "_scram_available",
        "_plain_available",
        "_secret",
        "_fake_iterations",
        "_forced_nonce",
        "_state",
        "_hash_name",
        "_plus",
        "_flag",
        "_gs2_header",
        "_first_bare",
        "_nonce",
        "_server_first",
        "_creds",
        "_fake",
        "_username",
        "_authzid",
    )

    def __init__(
        self,
        *,
        domain: str,
        tls: bool,
        cb_data: bytes | None = None,
        allow_plain_without_tls: bool = False,
        scram_available: bool = True,
        plain_available: bool = True,
        secret: bytes | None = None,
        fake_iterations: int = DEFAULT_ITERATIONS,
        _server_nonce: str | None = None,  # tests only: RFC test vectors fix the nonce
    ) -> None:
        self._domain = prep_domain(domain)
        self._tls = tls
        self._cb_data = cb_data if tls else None
        self._allow_plain_without_tls = allow_plain_without_tls
        self._scram_available = scram_available
        self._plain_available = plain_available
        # A stable secret (from config) keeps fake salts stable across restarts and nodes.
        self._secret = secret or _PROCESS_SECRET
        self._fake_iterations = fake_iterations
        self._forced_nonce = _server_nonce
        self._state = _IDLE
        self._reset()

    def _reset(self) -> None:
        self._hash_name = self._flag = self._gs2_header = self._first_bare = ""
        self._nonce = self._server_first = ""
        self._plus = self._fake = False
        self._creds: ScramCredentials | None = None
        self._username = ""
        self._authzid: str | None = None

    # -- public API -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The last exchange has ended (success or failure); no response is expected."""
        return self._state in (_SUCCESS, _FAILURE)

    @property
    def authenticated(self) -> bool:
        return self._state == _SUCCESS

    def _offers_plus(self) -> bool:
        return self._scram_available and self._cb_data is not None

    def channel_binding_types(self) -> list[str]:
        """For the XEP-0440 <sasl-channel-binding/> stream feature."""
        return [CB_TYPE] if self._offers_plus() else []

    def mechanisms(self) -> list[str]:
        mechs: list[str] = []
        if self._scram_available:
            plus = self._offers_plus()
            mechs = [m for m, (_, is_plus) in SCRAM_MECHANISMS.items() if plus or not is_plus]
        if self._plain_available and (self._tls or self._allow_plain_without_tls):
            mechs.append("PLAIN")
        return mechs

    def start(self, mechanism: str, initial: bytes | None) -> Outcome:
        """Begin an exchange. `initial` is None when <auth/> carried no text at all, b"" for "="."""
        if self._state == _SUCCESS:
            return Failure("malformed-request", "already authenticated")
        self._reset()
        if mechanism not in self.mechanisms():
            if mechanism == "PLAIN" and self._plain_available and not self._tls:
                return self.fail("encryption-required", "PLAIN needs TLS")
            return self.fail("invalid-mechanism")
        if mechanism == "PLAIN":
            self._state = _PLAIN_INITIAL
        else:
            self._hash_name, self._plus = SCRAM_MECHANISMS[mechanism]
            self._state = _SCRAM_FIRST
        if initial is None:
            return Challenge(b"")  # ask for the initial response (RFC 6120 §6.4.2)
        return self.respond(initial)

    def respond(self, data: bytes) -> Outcome:
        state = self._state
        if state == _SUCCESS:
            return Failure("malformed-request", "already authenticated")
        if len(data) > MAX_MESSAGE_BYTES:
            return self.fail("malformed-request", "message too long")
        step = {
            _PLAIN_INITIAL: self._plain,
            _SCRAM_FIRST: self._scram_first,
            _SCRAM_FINAL: self._scram_final,
        }.get(state)
        if step is None:
            return self.fail("malformed-request", "unexpected response")
        try:
            return step(data)
        except SASLError as exc:
            return self.fail(exc.condition, exc.text)

    def provide_credentials(self, creds: ScramCredentials | None) -> Outcome:
        """Answer NeedScramCredentials; None means no such account."""
        if self._state != _SCRAM_CREDS:
            raise RuntimeError("provide_credentials() without a pending NeedScramCredentials")
        if creds is None:
            creds = self._fake_credentials()
            self._fake = True
        elif creds.iterations < 1 or not creds.salt:
            return self.fail("temporary-auth-failure", "stored credentials are unusable")
        self._creds = creds
        salt = base64.b64encode(creds.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={creds.iterations}"
        self._state = _SCRAM_FINAL
        return Challenge(self._server_first.encode("utf-8"))

    def password_checked(self, ok: bool) -> Outcome:
        """Answer NeedPasswordCheck."""
        if self._state != _PLAIN_CHECK:
            raise RuntimeError("password_checked() without a pending NeedPasswordCheck")
        if not ok:
            return self.fail("not-authorized")
        return self._succeed(None)

    def abort(self) -> Failure:
        """The client sent <abort/>."""
        return self.fail("aborted")

    def fail(self, condition: str, text: str = "") -> Failure:
        """End the exchange from outside, e.g. after decode_payload raised incorrect-encoding."""
        if self._state != _SUCCESS:
            self._reset()  # drop keys and nonces as soon as they are useless
            self._state = _FAILURE
        return Failure(condition, text)

    # -- helpers -----------------------------------------------------------------------------------

    def _succeed(self, data: bytes | None) -> Outcome:
        authzid = self._authzid
        if authzid is not None:
            # RFC 6120 §6.3.8: we only let a user act as their own bare JID
            try:
                jid: JID | None = JID.parse(authzid)
            except JIDError:
                jid = None
            if jid is None or jid != JID(self._username, self._domain, prepared=True):
                return self.fail("invalid-authzid")
            authzid = str(jid)
        username = self._username
        self._reset()
        self._state = _SUCCESS
        return Success(data, username, authzid)

    def _prep_username(self, name: str) -> str:
        try:
            local, at, domain = name.rpartition("@")
            # COMPAT: some clients send "user@domain" as the authentication identity
            if at and local and prep_domain(domain) == self._domain:
                name = local
            return prep_localpart(name)
        except JIDError:
            raise SASLError("not-authorized") from None

    # -- PLAIN (RFC 4616) -------------------------------------------------------------------------

    def _plain(self, data: bytes) -> Outcome:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise SASLError("malformed-request", "expected authzid NUL authcid NUL passwd")
        authzid, authcid, passwd = (_utf8(p) for p in parts)
        if not authcid:
            raise SASLError("malformed-request", "empty authentication identity")
        if not passwd:
            raise SASLError("not-authorized")
        username = self._prep_username(authcid)
        try:
            password = _OPAQUE.enforce(passwd)
        except UnicodeError:
            raise SASLError("not-authorized") from None
        self._username, self._authzid = username, authzid or None
        self._state = _PLAIN_CHECK
        return NeedPasswordCheck(username, password, self._authzid)

    # -- SCRAM (RFC 5802) -------------------------------------------------------------------------

    def _check_binding(self, flag: str) -> None:
        if self._plus:
            if flag != f"p={CB_TYPE}":
                raise SASLError("malformed-request", f"-PLUS needs p={CB_TYPE}")
        elif flag == "y":
            # The client could bind but thinks we can't: someone stripped -PLUS from our list.
            if self._offers_plus():
                raise SASLError("not-authorized", "channel binding downgrade detected")
        elif flag != "n":
            raise SASLError("malformed-request", "channel binding needs a -PLUS mechanism")

    def _scram_first(self, data: bytes) -> Outcome:
        flag, authzid, gs2_header, bare = _parse_gs2(_utf8(data))
        self._check_binding(flag)
        name, client_nonce = _parse_first_bare(bare)
        self._username = self._prep_username(name)
        self._authzid = authzid
        self._flag, self._gs2_header, self._first_bare = flag, gs2_header, bare
        self._nonce = client_nonce + (self._forced_nonce or secrets.token_urlsafe(24))
        self._state = _SCRAM_CREDS
        return NeedScramCredentials(self._username, self._hash_name)

    def _fake_credentials(self) -> ScramCredentials:
        # Deterministic per (hash, user): a repeated probe sees the same salt, like a real account.
        hname, user = self._hash_name, self._username.encode("utf-8")

        def derive(label: bytes) -> bytes:
            return hmac_digest(
                hname, self._secret, label + b"\x00" + hname.encode() + b"\x00" + user
            )

        return ScramCredentials(
            salt=derive(b"salt")[:SALT_BYTES],
            iterations=self._fake_iterations,
            stored_key=derive(b"stored"),
            server_key=derive(b"server"),
        )

    def _scram_final(self, data: bytes) -> Outcome:
        creds = self._creds
        assert creds is not None  # set in provide_credentials
        without_proof, cbind, nonce, proof_b64 = _parse_final(_utf8(data))
        cbind_data = _b64_field(cbind, "c=")
        proof = _b64_field(proof_b64, "p=")
        if len(proof) != len(creds.stored_key):
            raise SASLError("malformed-request", "proof has the wrong length")
        if nonce != self._nonce:
            raise SASLError("malformed-request", "nonce mismatch")
        expected = self._gs2_header.encode("utf-8")
        if self._flag.startswith("p="):
            expected += self._cb_data or b""
        if not hmac.compare_digest(cbind_data, expected):
            raise SASLError("not-authorized", "channel binding mismatch")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac_digest(self._hash_name, creds.stored_key, auth_message)
        candidate = hash_digest(self._hash_name, _xor(proof, signature))
        if not hmac.compare_digest(candidate, creds.stored_key) or self._fake:
            raise SASLError("not-authorized")
        verifier = hmac_digest(self._hash_name, creds.server_key, auth_message)
        return self._succeed(b"v=" + base64.b64encode(verifier))
