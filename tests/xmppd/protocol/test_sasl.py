"""SASL server: RFC test vectors, full exchanges against a small client, every failure path."""

from __future__ import annotations

import base64
import datetime
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from auth import scram
from auth.scram import DEFAULT_ITERATIONS, HASHES, ScramCredentials, derive_credentials
from xmppd.protocol import sasl
from xmppd.protocol.sasl import Challenge, Failure, NeedScramCredentials, SASLServer, Success

DOMAIN = "example.com"
CB_DATA = hashlib.sha256(b"pretend this is our certificate").digest()
ITERATIONS = 512  # keep PBKDF2 in the test client cheap


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """The client side of RFC 5802, enough to drive the server through every path."""

    def __init__(
        self,
        hash_name: str,
        username: str,
        password: str,
        *,
        flag: str = "n",
        cb_data: bytes = b"",
        authzid: str | None = None,
        nonce: str = "cLiEnTnOnCe+/0123456789",
    ) -> None:
        self.hash_name, self.password, self.nonce = hash_name, password, nonce
        self.flag, self.cb_data = flag, cb_data
        self.gs2 = f"{flag},{'a=' + escape(authzid) if authzid else ''},"
        self.bare = f"n={escape(username)},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(a.split("=", 1) for a in text.split(","))
        assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce)
        salted = scram.salted_password(
            self.hash_name, self.password, base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        ckey = scram.client_key(self.hash_name, salted)
        bound = self.cb_data if self.flag.startswith("p=") else b""
        without_proof = f"c={b64(self.gs2.encode() + bound)},r={attrs['r']}"
        auth = f"{self.bare},{text},{without_proof}".encode()
        signature = scram.hmac_digest(self.hash_name, scram.hash_digest(self.hash_name, ckey), auth)
        proof = bytes(a ^ b for a, b in zip(ckey, signature, strict=True))
        server_key = scram.hmac_digest(self.hash_name, salted, b"Server Key")
        self.server_signature = scram.hmac_digest(self.hash_name, server_key, auth)
        return f"{without_proof},p={b64(proof)}".encode()

    def check_success(self, outcome: sasl.Outcome) -> Success:
        assert isinstance(outcome, Success), outcome
        assert outcome.data == b"v=" + base64.b64encode(self.server_signature)
        return outcome


def creds_for(hash_name: str, password: str = "pencil") -> ScramCredentials:
    return derive_credentials(hash_name, password, b"0123456789abcdef", ITERATIONS)


def server(**kw: object) -> SASLServer:
    options: dict[str, object] = {"domain": DOMAIN, "tls": True, "cb_data": CB_DATA}
    options.update(kw)
    return SASLServer(**options)  # type: ignore[arg-type]


def exchange(
    srv: SASLServer, mech: str, client: ScramClient, creds: ScramCredentials | None
) -> sasl.Outcome:
    """Run a whole SCRAM exchange; return the first outcome that isn't the expected next step."""
    out = srv.start(mech, client.first())
    if not isinstance(out, NeedScramCredentials):
        return out
    out = srv.provide_credentials(creds)
    if not isinstance(out, Challenge):
        return out
    return srv.respond(client.final(out.data))


def failure(out: sasl.Outcome, condition: str) -> None:
    assert isinstance(out, Failure), out
    assert out.condition == condition, out


# -- payload encoding ------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "="])
def test_decode_empty_payloads(text: str | None) -> None:
    assert sasl.decode_payload(text) == b""


@pytest.mark.parametrize(
    "data", [b"\x00", b"\x00juliet\x00r0m30", b"ab", b"abc", bytes(range(256))]
)
def test_payload_round_trip(data: bytes) -> None:
    assert sasl.decode_payload(sasl.encode_payload(data)) == data


BAD_B64 = ["abc", "ab=c", "QQ", "QR==", "QQ= =", "QQ==\n", " QQ==", "Q Q==", "====", "QQ==="]


@pytest.mark.parametrize("text", [*BAD_B64, "é", "Y*=="])
def test_decode_rejects_bad_base64(text: str) -> None:
    with pytest.raises(sasl.SASLError) as info:
        sasl.decode_payload(text)
    assert info.value.condition == "incorrect-encoding"


def test_encode_payload_specials() -> None:
    assert sasl.encode_payload(b"") == "="
    assert sasl.encode_payload(None) == ""
    assert sasl.encode_payload(b"\x00") == "AA=="


# -- mechanism list ----------------------------------------------------------------------------


def test_mechanisms_strongest_first() -> None:
    plain_tcp = ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    plus = ["SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
    assert server().mechanisms() == [*plus, *plain_tcp, "PLAIN"]
    assert server(tls=False, cb_data=None).mechanisms() == plain_tcp
    assert server(tls=False).mechanisms() == plain_tcp  # no binding without TLS
    assert server(tls=False, allow_plain_without_tls=True).mechanisms() == [*plain_tcp, "PLAIN"]
    assert server(scram_available=False).mechanisms() == ["PLAIN"]
    assert server(plain_available=False, cb_data=None).mechanisms() == plain_tcp
    assert server().channel_binding_types() == ["tls-server-end-point"]
    assert server(tls=False).channel_binding_types() == []


def test_unknown_or_unoffered_mechanism() -> None:
    for mech, kw in [
        ("DIGEST-MD5", {}),
        ("scram-sha-1", {}),
        ("SCRAM-SHA-1-PLUS", {"cb_data": None}),
        ("SCRAM-SHA-256", {"scram_available": False}),
        ("PLAIN", {"plain_available": False}),
    ]:
        srv = server(**kw)
        failure(srv.start(mech, b"n,,n=user,r=abc"), "invalid-mechanism")
        assert srv.done and not srv.authenticated


# -- RFC test vectors --------------------------------------------------------------------------


# RFC 5802 §5 and RFC 7677 §3, message for message (user "user", password "pencil", i=4096)
RFC_VECTORS = [
    (
        "SHA-1",
        "3rfcNHYJY1ZVvWVs7j",
        b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    ),
    (
        "SHA-256",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    ),
]


@pytest.mark.parametrize(
    ("hash_name", "snonce", "c1", "s1", "c2", "s2"), RFC_VECTORS, ids=["SHA-1", "SHA-256"]
)
def test_rfc_vectors(hash_name: str, snonce: str, c1: bytes, s1: bytes, c2: bytes, s2: bytes):
    salt = base64.b64decode(s1.split(b",s=")[1].split(b",")[0])
    creds = derive_credentials(hash_name, "pencil", salt, 4096)
    srv = SASLServer(domain=DOMAIN, tls=False, _server_nonce=snonce)
    assert srv.start(f"SCRAM-{hash_name}", c1) == NeedScramCredentials("user", hash_name)
    assert srv.provide_credentials(creds) == Challenge(s1)
    assert srv.respond(c2) == Success(s2, "user", None)
    assert srv.done and srv.authenticated
    # the same exchange with one proof character changed fails
    srv = SASLServer(domain=DOMAIN, tls=False, _server_nonce=snonce)
    srv.start(f"SCRAM-{hash_name}", c1)
    srv.provide_credentials(creds)
    at = c2.index(b",p=") + 3
    tampered = c2[:at] + (b"B" if c2[at] == ord("A") else b"A") + c2[at + 1 :]
    failure(srv.respond(tampered), "not-authorized")


# -- full exchanges ----------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", list(HASHES))
def test_full_exchange_without_binding(hash_name: str) -> None:
    client = ScramClient(hash_name, "User", "pencil")
    srv = server()
    out = client.check_success(exchange(srv, f"SCRAM-{hash_name}", client, creds_for(hash_name)))
    assert out.username == "user" and out.authzid is None
    assert srv.authenticated


@pytest.mark.parametrize("hash_name", list(HASHES))
def test_full_plus_exchange(hash_name: str) -> None:
    client = ScramClient(
        hash_name, "juliet", "pencil", flag="p=tls-server-end-point", cb_data=CB_DATA
    )
    out = exchange(server(), f"SCRAM-{hash_name}-PLUS", client, creds_for(hash_name))
    assert client.check_success(out).username == "juliet"


def test_initial_response_may_come_later() -> None:
    client = ScramClient("SHA-512", "juliet", "pencil")
    srv = server()
    assert srv.start("SCRAM-SHA-512", None) == Challenge(b"")
    assert isinstance(srv.respond(client.first()), NeedScramCredentials)
    challenge = srv.provide_credentials(creds_for("SHA-512"))
    assert isinstance(challenge, Challenge)
    client.check_success(srv.respond(client.final(challenge.data)))


def test_username_escapes_and_preparation() -> None:
    client = ScramClient("SHA-256", "A,B=c", "pencil")
    srv = server()
    out = srv.start("SCRAM-SHA-256", client.first())
    assert out == NeedScramCredentials("a,b=c", "SHA-256")
    challenge = srv.provide_credentials(creds_for("SHA-256"))
    assert isinstance(challenge, Challenge)
    client.check_success(srv.respond(client.final(challenge.data)))


def test_nonces_are_fresh() -> None:
    seen = set()
    for _ in range(3):
        srv = server()
        srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc")
        out = srv.provide_credentials(creds_for("SHA-1"))
        assert isinstance(out, Challenge)
        seen.add(out.data.split(b",")[0])
    assert len(seen) == 3


def test_wrong_password() -> None:
    client = ScramClient("SHA-256", "juliet", "wrong")
    srv = server()
    failure(exchange(srv, "SCRAM-SHA-256", client, creds_for("SHA-256")), "not-authorized")
    assert srv.done and not srv.authenticated


def _first_challenge(srv: SASLServer, user: str, creds: ScramCredentials | None) -> dict:
    srv.start("SCRAM-SHA-256", f"n,,n={user},r=abcdef".encode())
    out = srv.provide_credentials(creds)
    assert isinstance(out, Challenge)
    return dict(a.split("=", 1) for a in out.data.decode().split(","))


def test_unknown_user_looks_like_a_real_one() -> None:
    secret = b"s" * 32
    fake = _first_challenge(server(secret=secret), "nobody", None)
    real = _first_challenge(server(secret=secret), "juliet", derive_credentials("SHA-256", "x"))
    assert fake.keys() == real.keys()
    assert len(base64.b64decode(fake["s"])) == len(base64.b64decode(real["s"]))
    assert int(fake["i"]) == int(real["i"]) == DEFAULT_ITERATIONS
    # the same probe twice sees the same salt; another name another one
    assert _first_challenge(server(secret=secret), "nobody", None)["s"] == fake["s"]
    assert _first_challenge(server(secret=secret), "nobody2", None)["s"] != fake["s"]
    assert _first_challenge(server(secret=b"t" * 32), "nobody", None)["s"] != fake["s"]


def test_unknown_user_fails_at_the_proof() -> None:
    client = ScramClient("SHA-1", "nobody", "pencil")
    srv = server(fake_iterations=ITERATIONS)
    failure(exchange(srv, "SCRAM-SHA-1", client, None), "not-authorized")


def test_authzid() -> None:
    for given_authzid, expected in [
        ("juliet@example.com", "juliet@example.com"),
        ("Juliet@EXAMPLE.com", "juliet@example.com"),
    ]:
        client = ScramClient("SHA-256", "juliet", "pencil", authzid=given_authzid)
        out = client.check_success(
            exchange(server(), "SCRAM-SHA-256", client, creds_for("SHA-256"))
        )
        assert out.authzid == expected
    for bad in ["romeo@example.com", "juliet@example.net", "juliet@example.com/r", "example.com"]:
        client = ScramClient("SHA-256", "juliet", "pencil", authzid=bad)
        out = exchange(server(), "SCRAM-SHA-256", client, creds_for("SHA-256"))
        failure(out, "invalid-authzid")
    # a wrong password with a bad authzid says not-authorized: nothing leaks before the proof
    client = ScramClient("SHA-256", "juliet", "nope", authzid="romeo@example.com")
    failure(exchange(server(), "SCRAM-SHA-256", client, creds_for("SHA-256")), "not-authorized")


# -- channel binding ---------------------------------------------------------------------------


def test_downgrade_detected() -> None:
    client = ScramClient("SHA-256", "juliet", "pencil", flag="y")
    failure(server().start("SCRAM-SHA-256", client.first()), "not-authorized")


def test_y_flag_is_fine_when_we_offer_no_binding() -> None:
    client = ScramClient("SHA-256", "juliet", "pencil", flag="y")
    out = exchange(server(cb_data=None), "SCRAM-SHA-256", client, creds_for("SHA-256"))
    client.check_success(out)


def test_plus_with_wrong_binding_data() -> None:
    client = ScramClient(
        "SHA-256", "juliet", "pencil", flag="p=tls-server-end-point", cb_data=b"other cert"
    )
    out = exchange(server(), "SCRAM-SHA-256-PLUS", client, creds_for("SHA-256"))
    failure(out, "not-authorized")


@pytest.mark.parametrize(
    ("mech", "flag", "condition"),
    [
        ("SCRAM-SHA-256-PLUS", "n", "malformed-request"),
        ("SCRAM-SHA-256-PLUS", "y", "malformed-request"),
        ("SCRAM-SHA-256-PLUS", "p=tls-unique", "malformed-request"),
        ("SCRAM-SHA-256", "p=tls-server-end-point", "malformed-request"),
    ],
)
def test_binding_flag_must_fit_mechanism(mech: str, flag: str, condition: str) -> None:
    client = ScramClient("SHA-256", "juliet", "pencil", flag=flag, cb_data=CB_DATA)
    failure(server().start(mech, client.first()), condition)


def test_final_header_must_repeat_the_first() -> None:
    srv = server()
    client = ScramClient("SHA-256", "juliet", "pencil")
    srv.start("SCRAM-SHA-256", client.first())
    challenge = srv.provide_credentials(creds_for("SHA-256"))
    assert isinstance(challenge, Challenge)
    client.gs2 = "y,,"  # the client-final's c= now carries another header
    failure(srv.respond(client.final(challenge.data)), "not-authorized")


# -- malformed SCRAM messages ------------------------------------------------------------------

# one line per GS2 header problem, then client-first-message-bare problems
MALFORMED_FIRST = [
    *(b"", b"n,,", b"n", b"x,,n=user,r=abc", b"p=,,n=user,r=abc", b"n,b=user,n=user,r=abc"),
    *(b"n,a=,n=user,r=abc", b"n,,m=ext,n=user,r=abc", b"n,,r=abc,n=user", b"n,,n=user"),
    *(b"n,,n=,r=abc", b"n,,n=us=er,r=abc", b"n,,n=us=2cer,r=abc", b"n,,n=user=,r=abc"),
    *(b"n,,n=us\x00er,r=abc", b"n,,n=user,r=", b"n,,n=user,r=ab c", b"n,,n=user,r=ab\x7fc"),
    *(b"n,,n=user,r=abc\xc3\xa9", b"n,,n=user,r=abc,", b"n,,n=user,r=abc,noequals"),
    *(b"n,,n=user,r=abc,1=x", b"n,,n=\xff,r=abc", b"n,,n=" + b"a" * 9000 + b",r=abc"),
]
BAD_FIRST = [(m, "malformed-request") for m in MALFORMED_FIRST] + [
    (b"n,,n=\xe2\x99\x9a,r=abc", "not-authorized"),  # unpreparable username
    (b"n,,n=a@b@c,r=abc", "not-authorized"),
]


@pytest.mark.parametrize(("message", "condition"), BAD_FIRST)
def test_bad_client_first(message: bytes, condition: str) -> None:
    srv = server()
    failure(srv.start("SCRAM-SHA-256", message), condition)
    assert srv.done


def test_extensions_are_ignored() -> None:
    srv = server()
    assert isinstance(srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc,x=ext"), NeedScramCredentials)


def _final_parts(client: ScramClient, srv: SASLServer) -> tuple[str, str, str]:
    srv.start("SCRAM-SHA-256", client.first())
    challenge = srv.provide_credentials(creds_for("SHA-256"))
    assert isinstance(challenge, Challenge)
    c, r, p = client.final(challenge.data).decode().split(",")
    return c, r, p


def _mutations(c: str, r: str, p: str) -> list[str]:
    return [
        "",
        f"{c},{r}",
        f"{r},{c},{p}",
        f"{c},{p}",
        f"c=,{r},{p}",
        f"c=biws=,{r},{p}",
        f"c=bi ws,{r},{p}",
        f"{c},{r}x,{p}",
        f"{c},r=,{p}",
        f"{c},{r},p=",
        f"{c},{r},p=AAAA",
        f"{c},{r},{p}A",
        f"{c},{r},{p[:-1]}*",
        f"{c},{r},{p}," + "x=y",
        f"{c},{r},bad,{p}",
    ]


def test_bad_client_final() -> None:
    client = ScramClient("SHA-256", "juliet", "pencil")

    def fresh() -> SASLServer:
        srv = server(_server_nonce="FiXeD")
        _final_parts(client, srv)
        return srv

    c, r, p = _final_parts(client, server(_server_nonce="FiXeD"))
    client.check_success(fresh().respond(f"{c},{r},{p}".encode()))  # the unmutated one passes
    for message in _mutations(c, r, p):
        failure(fresh().respond(message.encode()), "malformed-request")
    failure(fresh().respond(b"\xff" + f"{c},{r},{p}".encode()), "malformed-request")
    # extensions before the proof are allowed by the grammar, and covered by the proof
    failure(fresh().respond(f"{c},{r},x=y,{p}".encode()), "not-authorized")


# -- state machine -----------------------------------------------------------------------------


def test_steps_out_of_order() -> None:
    srv = server()
    failure(srv.respond(b"c=biws"), "malformed-request")
    with pytest.raises(RuntimeError):
        srv.provide_credentials(None)
    with pytest.raises(RuntimeError):
        srv.password_checked(True)
    srv = server()
    srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc")
    failure(srv.respond(b"n,,n=user,r=abc"), "malformed-request")  # we were waiting for creds


def test_abort_and_retry() -> None:
    srv = server()
    srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc")
    assert srv.abort() == Failure("aborted")
    assert srv.done and not srv.authenticated
    failure(srv.respond(b"c=biws"), "malformed-request")
    srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc")  # the caller ends it, e.g. on bad base64
    assert srv.fail("incorrect-encoding") == Failure("incorrect-encoding")
    failure(srv.respond(b"c=biws"), "malformed-request")
    client = ScramClient("SHA-1", "user", "pencil")
    client.check_success(exchange(srv, "SCRAM-SHA-1", client, creds_for("SHA-1")))
    # once authenticated it stays so
    failure(srv.start("PLAIN", b"\x00user\x00pencil"), "malformed-request")
    assert srv.abort() == Failure("aborted")
    assert srv.authenticated


def test_bad_stored_credentials() -> None:
    srv = server()
    srv.start("SCRAM-SHA-1", b"n,,n=user,r=abc")
    broken = ScramCredentials(salt=b"", iterations=0, stored_key=b"", server_key=b"")
    failure(srv.provide_credentials(broken), "temporary-auth-failure")


# -- PLAIN -------------------------------------------------------------------------------------


def test_plain() -> None:
    srv = server()
    out = srv.start("PLAIN", b"\x00Juliet\x00pencil")
    assert out == sasl.NeedPasswordCheck("juliet", "pencil", None)
    assert srv.password_checked(True) == Success(None, "juliet", None)
    assert srv.authenticated
    srv = server()
    srv.start("PLAIN", b"\x00juliet\x00nope")
    failure(srv.password_checked(False), "not-authorized")
    assert srv.done and not srv.authenticated


def test_plain_without_tls() -> None:
    failure(server(tls=False).start("PLAIN", b"\x00juliet\x00pencil"), "encryption-required")
    srv = server(tls=False, allow_plain_without_tls=True)
    assert isinstance(srv.start("PLAIN", b"\x00juliet\x00pencil"), sasl.NeedPasswordCheck)


def test_plain_initial_response_later_and_authzid() -> None:
    srv = server()
    assert srv.start("PLAIN", None) == Challenge(b"")
    out = srv.respond(b"juliet@example.com\x00juliet\x00p\xc3\xa4ss word")
    assert out == sasl.NeedPasswordCheck("juliet", "päss word", "juliet@example.com")
    assert srv.password_checked(True) == Success(None, "juliet", "juliet@example.com")
    srv = server()
    srv.start("PLAIN", b"romeo@example.com\x00juliet\x00pencil")
    failure(srv.password_checked(True), "invalid-authzid")


def test_plain_full_jid_as_authcid() -> None:  # COMPAT
    out = server().start("PLAIN", b"\x00juliet@Example.com\x00pencil")
    assert out == sasl.NeedPasswordCheck("juliet", "pencil", None)
    failure(server().start("PLAIN", b"\x00juliet@example.org\x00pencil"), "not-authorized")


MALFORMED_PLAIN = [b"", b"juliet", b"\x00juliet", b"\x00juliet\x00pencil\x00", b"\x00\x00pencil"]
MALFORMED_PLAIN += [b"\x00jul\xffiet\x00pencil", b"\x00juliet\x00pen\xffcil"]
# empty password, unpreparable username, password with a control character (OpaqueString)
REFUSED_PLAIN = [b"\x00juliet\x00", b"\x00jul iet\x00pencil", b"\x00juliet\x00pen\x07cil"]


@pytest.mark.parametrize(
    ("message", "condition"),
    [(m, "malformed-request") for m in MALFORMED_PLAIN]
    + [(m, "not-authorized") for m in REFUSED_PLAIN],
)
def test_plain_malformed(message: bytes, condition: str) -> None:
    failure(server().start("PLAIN", message), condition)


# -- fuzzing -----------------------------------------------------------------------------------

OUTCOME_TYPES = (Challenge, Success, Failure, NeedScramCredentials, sasl.NeedPasswordCheck)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"]), st.binary(max_size=200))
def test_fuzz_first_step(mech: str, data: bytes) -> None:
    out = server().start(mech, data)
    assert isinstance(out, OUTCOME_TYPES)
    assert not isinstance(out, Success)


_FIRST_ALPHABET = st.sampled_from(list("npy=,a-rm=2C3Dtls-server-end-point\x00é"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIRST_ALPHABET, max_size=40).map("".join))
def test_fuzz_client_first_grammar(text: str) -> None:
    out = server().start("SCRAM-SHA-256", text.encode())
    assert isinstance(out, (Failure, NeedScramCredentials))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_client_final(data: st.DataObject) -> None:
    client = ScramClient("SHA-1", "user", "pencil")
    srv = server()
    srv.start("SCRAM-SHA-1", client.first())
    challenge = srv.provide_credentials(creds_for("SHA-1"))
    assert isinstance(challenge, Challenge)
    good = bytearray(client.final(challenge.data))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(good) - 1))
        good[pos] = data.draw(st.integers(0, 255))
    out = srv.respond(bytes(good))
    assert isinstance(out, (Failure, Success))
    if isinstance(out, Success):  # only when the mutation changed nothing
        assert bytes(good) == client.final(challenge.data)


# -- tls-server-end-point ----------------------------------------------------------------------


def _certificate(key: object, algorithm: hashes.HashAlgorithm | None, **sign_kw: object) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    cert = builder.sign(key, algorithm, **sign_kw)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)


@pytest.mark.parametrize(
    ("key_kind", "algorithm", "sign_kw", "expected"),
    [
        ("ec", hashes.SHA256(), {}, hashlib.sha256),
        ("rsa", hashes.SHA384(), {}, hashlib.sha384),
        ("rsa", hashes.SHA512(), {"rsa_padding": _PSS}, hashlib.sha512),  # hash from PSS params
        ("ed25519", None, {}, hashlib.sha512),  # as OpenSSL does
    ],
)
def test_end_point_hash_follows_signature(
    rsa_key: rsa.RSAPrivateKey, key_kind: str, algorithm, sign_kw: dict, expected
) -> None:
    key = {
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa_key,
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[key_kind]()
    der = _certificate(key, algorithm, **sign_kw)
    assert sasl.tls_server_end_point(der) == expected(der).digest()


@pytest.mark.parametrize("oid_last_byte", [b"\x04", b"\x05"])  # md5/sha1WithRSAEncryption
def test_end_point_md5_sha1_upgraded_to_sha256(rsa_key: rsa.RSAPrivateKey, oid_last_byte) -> None:
    # cryptography refuses to sign with MD5/SHA-1: relabel a SHA-256 certificate's algorithm
    # (tbsCertificate and outer), which parsing does not verify.
    sha256_rsa = bytes.fromhex("06092a864886f70d01010b")
    der = _certificate(rsa_key, hashes.SHA256())
    assert der.count(sha256_rsa) == 2
    der = der.replace(sha256_rsa, sha256_rsa[:-1] + oid_last_byte)
    assert sasl.tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_end_point_feeds_a_plus_exchange() -> None:
    der = _certificate(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    cb = sasl.tls_server_end_point(der)
    client = ScramClient("SHA-256", "juliet", "pencil", flag="p=tls-server-end-point", cb_data=cb)
    srv = server(cb_data=cb)
    client.check_success(exchange(srv, "SCRAM-SHA-256-PLUS", client, creds_for("SHA-256")))


def test_login_costs_only_hmacs() -> None:
    """With stored keys the server runs no PBKDF2: a login is a few HMACs whatever `i` is."""
    creds = derive_credentials("SHA-256", "pencil", iterations=100_000)
    client = ScramClient("SHA-256", "juliet", "pencil")
    srv = server(_server_nonce="n")
    srv.start("SCRAM-SHA-256", client.first())
    final = client.final(srv.provide_credentials(creds).data)  # type: ignore[union-attr]
    rounds, elapsed = 200, 0.0
    for _ in range(rounds):
        srv = server(_server_nonce="n")
        t0 = time.perf_counter()
        srv.start("SCRAM-SHA-256", client.first())
        srv.provide_credentials(creds)
        out = srv.respond(final)
        elapsed += time.perf_counter() - t0
        client.check_success(out)
    per_login_us = elapsed / rounds * 1e6
    print(f"\nSCRAM-SHA-256 server work per login: {per_login_us:.0f} µs")
    assert per_login_us < 5000  # 100k PBKDF2 rounds alone would take ~50 ms
