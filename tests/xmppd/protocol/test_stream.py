"""The c2s stream machine wired to a scripted client in memory: no sockets, no trio."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from lxml import etree

from auth.scram import ScramCredentials, derive_credentials
from xmppd.protocol import stream as st
from xmppd.protocol.jid import JID

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
PASSWORD = "pencil"
CREDS = {h: derive_credentials(h, PASSWORD, iterations=4096) for h in ("SHA-1", "SHA-256")}


def settings(**overrides: object) -> st.StreamSettings:
    values: dict = {"domains": frozenset({"example.org"}), "default_domain": "example.org"}
    values.update(overrides)
    return st.StreamSettings(**values)


class Pair:
    """A server stream plus a scripted client; `send()` returns what the server answered."""

    def __init__(self, **overrides: object) -> None:
        self.server = st.ServerStream(settings(**overrides))
        self.events: list[object] = []

    def send(self, data: bytes) -> bytes:
        self.server.receive_data(data)
        self.pump()
        return self.server.data_to_send()

    def pump(self) -> None:
        while True:
            event = self.server.next_event()
            if event is st.NEED_DATA or event is st.PAUSED:
                return
            self.events.append(event)
            self.answer(event)

    def answer(self, event: object) -> None:
        if isinstance(event, st.NeedScramCredentials):
            self.server.sasl_credentials(
                CREDS.get(event.hash_name) if event.username == "juliet" else None
            )
        elif isinstance(event, st.NeedPasswordCheck):
            self.server.sasl_password_checked(
                event.username == "juliet" and event.password == PASSWORD
            )
        elif isinstance(event, st.BindRequest):
            self.server.bind_done(JID("juliet", "example.org", event.resource or "generated"))

    def starttls(self) -> None:
        out = self.send(HEADER)
        assert b"<starttls" in out and b"<required/>" in out
        assert self.server.phase is st.Phase.STARTTLS_ONLY
        out = self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in out
        assert isinstance(self.events[-1], st.StartTLS)
        self.server.tls_established(b"cb-data")
        assert self.server.phase is st.Phase.HEADER

    def scram(
        self, hash_name: str = "SHA-256", password: str = PASSWORD, user: str = "juliet"
    ) -> bytes:
        """Run a SCRAM exchange as the client; returns the server's last output."""
        mech = f"SCRAM-{hash_name}"
        nonce = "clientnonce123"
        first_bare = f"n={user},r={nonce}"
        gs2 = "n,,"
        out = self.send(_auth(mech, (gs2 + first_bare).encode()))
        if b"<failure" in out:
            return out
        server_first = base64.b64decode(_between(out, b"<challenge", b"</challenge>")).decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(
            {"SHA-1": "sha1", "SHA-256": "sha256"}[hash_name],
            password.encode(),
            base64.b64decode(fields["s"]),
            int(fields["i"]),
        )
        digest = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256}[hash_name]
        client_key = hmac.new(salted, b"Client Key", digest).digest()
        final_bare = f"c={base64.b64encode(gs2.encode()).decode()},r={fields['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(digest(client_key).digest(), auth_message, digest).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
        return self.send(
            b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            + base64.b64encode(final)
            + b"</response>"
        )

    def login(self) -> None:
        self.starttls()
        assert b"SCRAM-SHA-256-PLUS" in self.send(HEADER)
        assert b"<success" in self.scram()
        out = self.send(HEADER)
        assert b"<bind" in out and b"urn:xmpp:stream-limits:0" in out
        out = self.send(
            b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>balcony</resource></bind></iq>"
        )
        assert b"<jid>juliet@example.org/balcony</jid>" in out
        assert self.server.phase is st.Phase.ESTABLISHED


def _auth(mech: str, initial: bytes) -> bytes:
    payload = base64.b64encode(initial)
    return (
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>".encode()
        + payload
        + b"</auth>"
    )


def _between(data: bytes, start: bytes, end: bytes) -> bytes:
    begin = data.index(b">", data.index(start)) + 1
    return data[begin : data.index(end, begin)]


def test_full_negotiation_then_stanzas() -> None:
    pair = Pair()
    pair.login()
    pair.send(b"<message to='romeo@example.net'><body>wherefore</body></message>")
    stanza_events = [e for e in pair.events if isinstance(e, st.StanzaIn)]
    assert len(stanza_events) == 1
    assert etree.tostring(stanza_events[0].stanza).startswith(b'<message xmlns="jabber:client"')
    assert [type(e).__name__ for e in pair.events if not isinstance(e, st.StanzaIn)] == [
        "StartTLS",
        "NeedScramCredentials",
        "Authenticated",
        "BindRequest",
    ]
    out = pair.send(b"</stream:stream>")
    assert out == b"</stream:stream>"
    assert isinstance(pair.events[-1], st.Closed) and pair.server.closed


def test_pipelined_input_waits_for_the_bind_answer() -> None:
    pair = Pair()
    pair.starttls()
    pair.send(HEADER)
    pair.scram()
    pair.server.receive_data(
        HEADER
        + b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
        + b"<presence/>"
    )
    event = pair.server.next_event()
    assert isinstance(event, st.BindRequest) and event.resource is None
    assert pair.server.next_event() is st.PAUSED  # the presence waits for the bind answer
    pair.server.bind_done(JID("juliet", "example.org", "generated"))
    assert isinstance(pair.server.next_event(), st.StanzaIn)


def test_each_restart_gets_a_fresh_stream_id() -> None:
    pair = Pair()
    ids = []
    for chunk in (HEADER,):
        out = pair.send(chunk)
        ids.append(re.search(rb"id='([^']+)'", out).group(1))
    pair.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    pair.server.tls_established(None)
    ids.append(re.search(rb"id='([^']+)'", pair.send(HEADER)).group(1))
    assert ids[0] != ids[1]


def test_wrong_password_then_too_many_attempts() -> None:
    pair = Pair(max_sasl_attempts=2)
    pair.starttls()
    pair.send(HEADER)
    out = pair.scram(password="wrong")
    assert b"<not-authorized/>" in out and pair.server.phase is st.Phase.AUTH
    out = pair.scram(password="wrong")
    assert b"<policy-violation" in out and pair.server.closed


def test_failures_name_the_account_for_login_throttling() -> None:
    """Each failure is an AuthFailed event naming the account tried (SCRAM fails after the
    credentials were handed over, PLAIN on the check); at the cap the Closed event follows."""
    pair = Pair(max_sasl_attempts=3)
    pair.starttls()
    pair.send(HEADER)
    pair.scram(password="wrong")
    pair.send(_auth("PLAIN", b"\0romeo\0nope"))
    pair.send(_auth("PLAIN", b"not plain"))  # malformed: no account named, no guess
    kinds = [e for e in pair.events if isinstance(e, (st.AuthFailed, st.Closed))]
    assert kinds == [
        st.AuthFailed("juliet", "not-authorized"),
        st.AuthFailed("romeo", "not-authorized"),
        st.AuthFailed("", "malformed-request"),
        st.Closed("policy-violation", error=True, text="too many failed authentication attempts"),
    ]


def test_unknown_user_looks_like_a_wrong_password() -> None:
    pair = Pair()
    pair.starttls()
    pair.send(HEADER)
    out = pair.scram(user="nobody")
    assert b"<not-authorized/>" in out


def test_plain_is_not_offered_without_tls_when_tls_is_optional() -> None:
    pair = Pair(require_tls=False)
    out = pair.send(HEADER)
    assert b"<starttls" in out and b"<required/>" not in out
    assert b"PLAIN" not in out and b"SCRAM-SHA-256" in out and b"-PLUS" not in out
    out = pair.send(_auth("PLAIN", b"\0juliet\0" + PASSWORD.encode()))
    assert b"<failure" in out


def test_stanza_before_auth_is_not_authorized() -> None:
    pair = Pair()
    pair.send(HEADER)
    out = pair.send(b"<message><body>hi</body></message>")
    assert b"<not-authorized" in out and pair.server.closed


def test_stream_error_before_header_sends_a_header_first() -> None:
    pair = Pair()
    out = pair.send(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='other.example' version='1.0'>"
    )
    assert out.startswith(b"<?xml version='1.0'?><stream:stream")
    assert b"<host-unknown" in out and out.endswith(b"</stream:stream>")


def test_unsupported_version() -> None:
    pair = Pair()
    out = pair.send(
        HEADER.replace(b"to='example.org' version='1.0'", b"to='example.org' version='2.0'")
    )
    assert b"<unsupported-version" in out


@pytest.mark.parametrize(
    "data, condition",
    [
        (b"<!DOCTYPE x>", b"restricted-xml"),
        (b"<!-- c -->", b"restricted-xml"),
        (b"<?pi x?>", b"restricted-xml"),
    ],
)
def test_parser_errors_become_stream_errors(data: bytes, condition: bytes) -> None:
    pair = Pair()
    out = pair.send(HEADER + data)
    assert condition in out and pair.server.closed


def test_invalid_bind_resource_gets_bad_request() -> None:
    pair = Pair()
    pair.starttls()
    pair.send(HEADER)
    pair.scram()
    pair.send(HEADER)
    out = pair.send(
        b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>\xe2\x80\x8b</resource></bind></iq>"  # a zero-width space alone is not allowed
    )
    assert b"bad-request" in out and pair.server.phase is st.Phase.BIND


def test_transitions_table_covers_every_phase() -> None:
    reachable = {to for _from, to in st.TRANSITIONS} | {st.Phase.HEADER}
    assert reachable == set(st.Phase)


def test_scram_credentials_round_trip() -> None:
    creds = CREDS["SHA-256"]
    assert ScramCredentials.from_dict(creds.to_dict()) == creds


# ---- XEP-0198 support: resumption, local replies, application-specific stream errors --------


def authenticated_pair() -> Pair:
    """A stream that authenticated as juliet and restarted: it waits for bind (or resume)."""
    pair = Pair()
    pair.starttls()
    pair.send(HEADER)
    assert b"<success" in pair.scram()
    pair.send(HEADER)
    assert pair.server.phase is st.Phase.BIND
    return pair


def test_resume_comes_before_binding_as_a_nonza() -> None:
    pair = authenticated_pair()
    out = pair.send(b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")
    assert out == b"" and isinstance(pair.events[-1], st.NonzaIn)
    assert pair.server.phase is st.Phase.BIND


def test_resumed_establishes_the_stream_without_a_bind() -> None:
    pair = authenticated_pair()
    # Pipelined: the resumption and a stanza right behind it.
    pair.server.receive_data(
        b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/><message to='romeo@example.net'/>"
    )
    assert isinstance(pair.server.next_event(), st.NonzaIn)
    pair.server.resumed(JID("juliet", "example.org", "balcony"))
    assert pair.server.phase is st.Phase.ESTABLISHED
    assert pair.server.jid == JID("juliet", "example.org", "balcony")
    assert isinstance(pair.server.next_event(), st.StanzaIn)  # now routed as juliet's
    assert pair.server.data_to_send() == b""  # nothing was bound, nothing answered


def test_resumed_refuses_another_account_and_other_phases() -> None:
    pair = authenticated_pair()
    with pytest.raises(ValueError):
        pair.server.resumed(JID("romeo", "example.org", "orchard"))
    pair.send(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert pair.server.phase is st.Phase.ESTABLISHED
    with pytest.raises(AssertionError):
        pair.server.resumed(JID("juliet", "example.org", "generated"))
    fresh = Pair()
    fresh.send(HEADER)
    with pytest.raises(AssertionError):  # not authenticated
        fresh.server.resumed(JID("juliet", "example.org", "x"))


def test_legacy_session_request_is_a_local_reply_the_transport_sends() -> None:
    pair = Pair()
    pair.login()
    out = pair.send(
        b"<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )
    assert out == b""  # not written by the stream: the session counts and sends it
    event = pair.events[-1]
    assert isinstance(event, st.LocalReply)
    assert event.request.get("id") == "s1"
    assert event.reply.get("type") == "result" and event.reply.get("id") == "s1"


def test_stream_error_with_an_application_condition() -> None:
    pair = Pair()
    pair.login()
    app = etree.Element("{urn:xmpp:sm:3}handled-count-too-high", nsmap={None: "urn:xmpp:sm:3"})
    app.set("h", "10")
    closed = pair.server.stream_error("undefined-condition", "ten is too many", app)
    out = pair.server.data_to_send().replace(b"</stream:stream>", b"")
    declared = b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
    error = etree.fromstring(out.replace(b"<stream:error>", declared))
    assert [etree.QName(c).localname for c in error] == [
        "undefined-condition",
        "text",
        "handled-count-too-high",
    ]  # RFC 6120 §4.9.2: condition, text, then the application-specific element
    assert error[2].get("h") == "10" and closed.reason == "undefined-condition"
