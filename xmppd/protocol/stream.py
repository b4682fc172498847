"""The server side of a c2s XML stream as a sans-IO state machine (RFC 6120 §4-§7).

Theory of operation
-------------------
The transport feeds bytes with `receive_data()` and then calls `next_event()` until it returns
`NEED_DATA`. Negotiation (stream headers, features, STARTTLS, SASL, restarts, resource binding)
happens in here; the transport only sees events that need I/O or a decision:

- `StartTLS`: write out `data_to_send()` (the `<proceed/>`), wrap the socket in TLS, then call
  `tls_established(cb_data)`; the client restarts the stream.
- `NeedScramCredentials` / `NeedPasswordCheck`: look the account up, answer with
  `sasl_credentials()` / `sasl_password_checked()`.
- `Authenticated`: informational (logging, raising limits happens in here already).
- `AuthFailed`: informational: the `<failure/>` is in `data_to_send()`; the transport may
  count it (login throttling) before writing it out.
- `BindRequest`: decide the full JID (conflicts, limits), answer with `bind_done()` or
  `bind_failed()`.
- `StanzaIn` / `NonzaIn`: established-stream traffic for the router / stream-level modules.
- `LocalReply`: a stanza the stream answered itself (the legacy session request); the transport
  sends the reply like any other stanza, so stream management counts both.
- `Closed`: write out what's left, then close the transport.

`resumed(jid)` carries an existing session on after XEP-0198 resumption: BIND -> ESTABLISHED
without a bind request.

While an answer is pending, `next_event()` returns `PAUSED`: pipelined input waits in the queue.
Output accumulates and is taken with `data_to_send()`.

Every phase change is listed in `TRANSITIONS` below; `_enter()` refuses any other.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, Final

from lxml import etree

from auth.scram import ScramCredentials

from . import namespaces as ns
from .jid import JID, JIDError, prep_resource
from .parser import ParseError, StanzaReceived, StreamClosed, StreamOpened, StreamParser
from .sasl import (
    Challenge,
    Failure,
    NeedPasswordCheck,
    NeedScramCredentials,
    SASLError,
    SASLServer,
    Success,
    decode_payload,
    encode_payload,
)
from .stanza import Element, copy, error_reply, first_child, local_name, make, qname, sub
from .stream_events import (  # noqa: F401  (the stream's API: `import stream as st`)
    NEED_DATA,
    PAUSED,
    Authenticated,
    AuthFailed,
    BindRequest,
    Closed,
    Event,
    LocalReply,
    NonzaIn,
    StanzaIn,
    StartTLS,
    _Sentinel,
)


class Phase(Enum):
    HEADER = auto()  # waiting for the client's stream header (also after each restart)
    STARTTLS_ONLY = auto()  # TLS is required and not up yet: only <starttls/> is allowed
    AUTH = auto()  # features with mechanisms sent; waiting for <auth/> (or <starttls/>)
    SASL = auto()  # a SASL exchange is in progress
    TLS_PENDING = auto()  # <proceed/> sent; the transport is wrapping the socket
    BIND = auto()  # authenticated, restarted: waiting for resource binding
    ESTABLISHED = auto()
    CLOSED = auto()


# (from, to) pairs that may happen; anything else is a bug in this file.
TRANSITIONS: Final[frozenset[tuple[Phase, Phase]]] = frozenset(
    {
        (Phase.HEADER, Phase.STARTTLS_ONLY),  # features offered <starttls><required/>
        (Phase.HEADER, Phase.AUTH),  # features offered SASL mechanisms
        (Phase.HEADER, Phase.BIND),  # restart after SASL success: features offered <bind/>
        (Phase.STARTTLS_ONLY, Phase.TLS_PENDING),
        (Phase.AUTH, Phase.TLS_PENDING),  # optional STARTTLS taken
        (Phase.AUTH, Phase.SASL),
        (Phase.SASL, Phase.SASL),  # challenge/response rounds
        (Phase.SASL, Phase.AUTH),  # failure or abort: the client may try again
        (Phase.SASL, Phase.HEADER),  # success: the client restarts the stream
        (Phase.TLS_PENDING, Phase.HEADER),  # TLS up: the client restarts the stream
        (Phase.BIND, Phase.ESTABLISHED),  # a resource was bound, or a session resumed
    }
    | {(phase, Phase.CLOSED) for phase in Phase}
)


@dataclass(slots=True)
class StreamSettings:
    """What a stream needs to know about its host; shared by all streams of a listener."""

    domains: frozenset[str]
    default_domain: str
    tls_available: bool = True
    require_tls: bool = True
    direct_tls: bool = False  # the socket was TLS from the first byte (XEP-0368)
    preauth_max_bytes: int = 16 * 1024
    max_bytes: int = 256 * 1024
    max_depth: int = 32
    max_sasl_attempts: int = 5
    idle_seconds: int = 600
    scram_available: bool = True
    plain_available: bool = True
    allow_plain_without_tls: bool = False
    # Persistent per-server secret: unknown accounts get stable fake SCRAM salts from it.
    sasl_secret: bytes | None = None
    # Extra stream features after authentication (stream management, CSI, ...) by domain,
    # built by the modules of each host.
    extra_features: dict[str, list[Element]] = field(default_factory=dict)
    # The framing: RFC 6120 XML streams, or RFC 7395 WebSocket messages (FramedParser).
    parser: type[StreamParser] = StreamParser
    # <stream:features/> as sent, by what they depend on (see ServerStream._send_features).
    rendered_features: dict[tuple, bytes] = field(default_factory=dict)


_STREAM_ERROR_TAIL = b"</stream:error></stream:stream>"
_CLIENT_STANZAS = frozenset({"message", "presence", "iq"})


class ServerStream:
    """One c2s stream, from the first byte to the closing tag. No I/O in here."""

    __slots__ = (
        "refuse_success",
        "settings",
        "phase",
        "tls",
        "domain",
        "username",
        "jid",
        "stream_id",
        "lang",
        "_parser",
        "_pending",
        "_out",
        "_sasl",
        "_sasl_mechanism",
        "_sasl_failures",
        "_sasl_account",
        "_header_sent",
        "_waiting",
        "_bind_iq",
        "_cb_data",
        "_ready",
    )

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.phase = Phase.HEADER
        self.tls = settings.direct_tls
        self.domain: str = settings.default_domain
        self.username: str | None = None
        self.jid: JID | None = None
        self.stream_id = ""
        self.lang = "en"
        self._parser = settings.parser(
            max_stanza_bytes=settings.preauth_max_bytes, max_depth=settings.max_depth
        )
        self._pending: deque[Any] = deque()
        self._out: list[bytes] = []
        self._sasl: SASLServer | None = None
        self._sasl_mechanism = ""
        self._sasl_failures = 0
        self._sasl_account = ""  # the account the exchange in progress named
        # Set by the session before it answers a credentials lookup: a proven login to that
        # account then fails with <account-disabled/> and this text (xmppd/bans.py).
        self.refuse_success: str | None = None
        self._header_sent = False
        self._waiting = False  # an event was handed out that needs an answer
        self._bind_iq: Element | None = None
        self._cb_data: bytes | None = None
        self._ready: list[Event] = []  # events produced while answering the transport

    # ---- transport-facing API ---------------------------------------------------------------

    def set_channel_binding(self, cb_data: bytes | None) -> None:
        """tls-server-end-point data for SCRAM -PLUS (direct TLS sets it before any data)."""
        self._cb_data = cb_data

    def receive_data(self, data: bytes) -> None:
        if self.phase is not Phase.CLOSED:
            self._pending.extend(self._parser.feed(data))

    def next_event(self) -> Event | _Sentinel:
        if self._ready:
            return self._ready.pop(0)
        while not self._waiting:
            if self.phase is Phase.CLOSED or not self._pending:
                return NEED_DATA
            event = self._handle(self._pending.popleft())
            if event is not None:
                return event
        return PAUSED

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def sasl_failures(self) -> int:
        return self._sasl_failures

    @property
    def sasl_mechanism(self) -> str:
        """The mechanism the client chose last ("" before <auth/>)."""
        return self._sasl_mechanism

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def tls_established(self, cb_data: bytes | None) -> None:
        self._cb_data = cb_data
        self.tls = True
        self._restart()
        self._enter(Phase.HEADER)

    def sasl_credentials(self, creds: ScramCredentials | None) -> None:
        self._answered(self._sasl.provide_credentials(creds))  # type: ignore[union-attr]

    def sasl_password_checked(self, ok: bool) -> None:
        self._answered(self._sasl.password_checked(ok))  # type: ignore[union-attr]

    def sasl_unavailable(self) -> None:
        """The account store is unreachable: RFC 6120 §6.5.12."""
        self._answered(Failure("temporary-auth-failure"))

    def _answered(self, outcome: Any) -> None:
        self._waiting = False
        at = len(self._ready)
        event = self._sasl_outcome(outcome)
        if event is not None:
            self._ready.insert(at, event)  # before a Closed the outcome may have queued

    def bind_done(self, jid: JID) -> None:
        self._waiting = False
        iq = self._bind_iq
        self._bind_iq = None
        self.jid = jid
        result = make("iq", {"type": "result", "id": iq.get("id")}) if iq is not None else None
        if result is not None:
            bind = sub(result, ns.BIND, "bind")
            sub(bind, ns.BIND, "jid", str(jid))
            self._write(result)
        self._parser.max_stanza_bytes = self.settings.max_bytes
        self._enter(Phase.ESTABLISHED)

    def resumed(self, jid: JID) -> None:
        """XEP-0198 §5: this stream carries on the session of `jid`, which stays bound."""
        if self.phase is not Phase.BIND or self._waiting:
            raise AssertionError(f"resumption in phase {self.phase.name}")
        if jid.local != self.username or jid.domain != self.domain:
            raise ValueError(f"{jid} is not the account this stream authenticated as")
        self.jid = jid
        self._parser.max_stanza_bytes = self.settings.max_bytes
        self._enter(Phase.ESTABLISHED)

    def bind_failed(self, condition: str, text: str | None = None) -> None:
        self._waiting = False
        if self._bind_iq is not None:
            self._write(error_reply(self._bind_iq, condition, text))
        self._bind_iq = None

    def close(self) -> None:
        """Close our side cleanly (server shutdown, session replaced...)."""
        if self.phase is not Phase.CLOSED:
            self._ensure_header()
            self._out.append(b"</stream:stream>")
            self._enter(Phase.CLOSED)

    def stream_error(
        self, condition: str, text: str | None = None, app: Element | None = None
    ) -> Closed:
        """Send a stream error (RFC 6120 §4.9) and close. Returns the Closed event.

        `app` is an application-specific condition element (§4.9.4), written after the text.
        """
        if self.phase is not Phase.CLOSED:
            self._ensure_header()
            parts = [b"<stream:error>", f'<{condition} xmlns="{ns.STREAM_ERRORS}"/>'.encode()]
            if text:
                escaped = _escape(text)
                parts.append(
                    f'<text xmlns="{ns.STREAM_ERRORS}" xml:lang="en">{escaped}</text>'.encode()
                )
            if app is not None:
                parts.append(etree.tostring(app))
            parts.append(_STREAM_ERROR_TAIL)
            self._out.append(b"".join(parts))
            self._enter(Phase.CLOSED)
        self._pending.clear()
        return Closed(condition, error=True, text=text)

    # ---- internals --------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        if phase is not self.phase and (self.phase, phase) not in TRANSITIONS:
            raise AssertionError(f"stream transition {self.phase.name} -> {phase.name}")
        self.phase = phase

    def _restart(self) -> None:
        self._parser.reset()
        self._pending.clear()
        self._header_sent = False

    def _write(self, el: Element) -> None:
        self._out.append(etree.tostring(el))

    def _handle(self, item: Any) -> Event | None:
        if isinstance(item, StanzaReceived):
            return self._element(item.element)
        if isinstance(item, StreamOpened):
            return self._stream_opened(item)
        if isinstance(item, StreamClosed):
            self._ensure_header()
            self._out.append(b"</stream:stream>")
            self._enter(Phase.CLOSED)
            return Closed("peer-closed")
        if isinstance(item, ParseError):
            return self.stream_error(item.condition, item.text)
        raise AssertionError(f"unknown parser event {item!r}")

    # ---- stream header and features ---------------------------------------------------------

    def _ensure_header(self) -> None:
        # RFC 6120 §4.9.1.2: even a stream error is preceded by our stream header.
        if not self._header_sent:
            self._send_header()

    def _send_header(self, to: str | None = None) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        to_attr = f" to='{_escape(to)}'" if to else ""
        self._out.append(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                f"xmlns:stream='{ns.STREAMS}' id='{self.stream_id}' from='{self.domain}'"
                f"{to_attr} version='1.0' xml:lang='en'>"
            ).encode()
        )
        self._header_sent = True

    def _stream_opened(self, opened: StreamOpened) -> Event | None:
        if self.phase is not Phase.HEADER:
            return self.stream_error("not-well-formed", "unexpected stream header")
        attrs = opened.attrs
        frm = attrs.get("from")
        if frm is not None:
            try:
                frm = str(JID.parse(frm))
            except JIDError:
                frm = None
        to = attrs.get("to")
        domain = self._match_domain(to)
        if domain is None:
            return self.stream_error("host-unknown", f"this server does not serve {to!r}")
        if self.username is not None and domain != self.domain:
            return self.stream_error("host-unknown", "the domain changed on stream restart")
        self.domain = domain
        self.lang = attrs.get(qname(ns.XML, "lang"), "en")
        self._send_header(frm)
        if opened.default_ns != ns.CLIENT:
            return self.stream_error(
                "invalid-namespace", "the stream namespace must be jabber:client"
            )
        version = attrs.get("version")
        if version is None or not _version_ok(version):
            return self.stream_error("unsupported-version", "this server speaks XMPP 1.0")
        self._send_features()
        return None

    def _match_domain(self, to: str | None) -> str | None:
        if to is None:
            return self.settings.default_domain
        try:
            jid = JID.parse(to)
        except JIDError:
            return None
        if jid.local is not None or jid.resource is not None:
            return None
        return jid.domain if jid.domain in self.settings.domains else None

    def _send_features(self) -> None:
        """Enter the next phase and announce it; the features are rendered once per listener
        and state (every login gets two of them)."""
        s = self.settings
        if self.username is not None:
            self._enter(Phase.BIND)
        elif not self.tls and s.tls_available and s.require_tls:
            self._enter(Phase.STARTTLS_ONLY)
        else:
            self._sasl = self._new_sasl()
            self._enter(Phase.AUTH)
        key = (self.phase, self.domain, self.tls, self._cb_data is not None)
        rendered = s.rendered_features.get(key)
        if rendered is None:
            rendered = s.rendered_features[key] = etree.tostring(self._features())
        # Serialize with the stream: prefix the client already knows.
        self._out.append(rendered)

    def _features(self) -> Element:
        features = etree.Element(qname(ns.STREAMS, "features"), nsmap={"stream": ns.STREAMS})
        s = self.settings
        if self.phase is Phase.BIND:
            sub(features, ns.BIND, "bind")
            # COMPAT: RFC 3921 session establishment, optional per RFC 6121 appendix E.
            session = sub(features, ns.SESSION, "session")
            sub(session, ns.SESSION, "optional")
            self._add_limits(features, s.max_bytes)
            for extra in s.extra_features.get(self.domain, ()):
                features.append(copy(extra))
        elif self.phase is Phase.STARTTLS_ONLY:
            starttls = sub(features, ns.TLS, "starttls")
            sub(starttls, ns.TLS, "required")
        else:
            assert self._sasl is not None
            if not self.tls and s.tls_available:
                sub(features, ns.TLS, "starttls")
            mechanisms = sub(features, ns.SASL, "mechanisms")
            for name in self._sasl.mechanisms():
                sub(mechanisms, ns.SASL, "mechanism", name)
            if self._cb_data is not None:
                # XEP-0440: say which channel binding the -PLUS mechanisms use.
                bindings = sub(features, ns.SASL_CB, "sasl-channel-binding")
                sub(bindings, ns.SASL_CB, "channel-binding", type="tls-server-end-point")
            self._add_limits(features, s.preauth_max_bytes)
        return features

    def _add_limits(self, features: Element, max_bytes: int) -> None:
        # XEP-0478: tell the client what we enforce so it doesn't trip over it.
        limits = sub(features, ns.STREAM_LIMITS, "limits")
        sub(limits, ns.STREAM_LIMITS, "max-bytes", str(max_bytes))
        sub(limits, ns.STREAM_LIMITS, "idle-seconds", str(self.settings.idle_seconds))

    def _new_sasl(self) -> SASLServer:
        s = self.settings
        return SASLServer(
            domain=self.domain,
            tls=self.tls,
            cb_data=self._cb_data,
            allow_plain_without_tls=s.allow_plain_without_tls,
            scram_available=s.scram_available,
            plain_available=s.plain_available,
            secret=s.sasl_secret,
        )

    # ---- first-level elements, by phase -----------------------------------------------------

    def _element(self, el: Element) -> Event | None:
        tag = el.tag
        phase = self.phase
        if phase is Phase.ESTABLISHED:
            if tag[1:14] == "jabber:client" and local_name(el) in _CLIENT_STANZAS:
                return self._established_stanza(el)
            if tag[1:14] == "jabber:client":
                return self.stream_error("unsupported-stanza-type", f"<{local_name(el)}/>")
            return NonzaIn(el)
        if tag == _STARTTLS and phase in (Phase.STARTTLS_ONLY, Phase.AUTH) and not self.tls:
            self._out.append(f'<proceed xmlns="{ns.TLS}"/>'.encode())
            self._restart()
            self._enter(Phase.TLS_PENDING)
            return StartTLS()
        if phase is Phase.AUTH and tag == _AUTH:
            return self._sasl_start(el)
        if phase is Phase.SASL and tag == _RESPONSE:
            return self._sasl_step(el)
        if phase is Phase.SASL and tag == _ABORT:
            return self._sasl_outcome(Failure("aborted"))
        if phase is Phase.STARTTLS_ONLY and tag == _AUTH:
            # RFC 6120 §6.4.1: no SASL before TLS when TLS is mandatory.
            return self._sasl_outcome(Failure("encryption-required", "use STARTTLS first"))
        if phase is Phase.BIND:
            return self._bind_phase(el)
        return self.stream_error("not-authorized", f"<{local_name(el)}/> before authentication")

    def _established_stanza(self, el: Element) -> Event | None:
        if local_name(el) == "iq" and el.get("type") == "set":
            child = first_child(el)
            if child is not None and child.tag == _SESSION and not el.get("to"):
                # COMPAT: legacy session establishment is a no-op that must succeed.
                return LocalReply(el, make("iq", {"type": "result", "id": el.get("id")}))
        return StanzaIn(el)

    def _bind_phase(self, el: Element) -> Event | None:
        if el.tag == qname(ns.CLIENT, "iq") and el.get("type") == "set":
            child = first_child(el)
            if child is not None and child.tag == _BIND:
                return self._bind_request(el, child)
        if el.tag[1:14] == "jabber:client":
            return self.stream_error("not-authorized", "bind a resource first")
        return NonzaIn(el)  # e.g. stream management <resume/>, which comes before binding

    def _bind_request(self, iq: Element, bind: Element) -> Event | None:
        if not iq.get("id"):
            return self.stream_error("invalid-xml", "iq without an id")
        resource_el = bind.find(qname(ns.BIND, "resource"))
        resource = None
        if resource_el is not None and (resource_el.text or "").strip():
            try:
                resource = prep_resource(resource_el.text.strip())
            except JIDError as exc:
                self._write(error_reply(iq, "bad-request", str(exc)))
                return None
        self._bind_iq = iq
        self._waiting = True
        return BindRequest(self.username or "", resource)

    # ---- SASL -------------------------------------------------------------------------------

    def _sasl_start(self, el: Element) -> Event | None:
        mechanism = el.get("mechanism") or ""
        try:
            initial = None if el.text is None else decode_payload(el.text)
        except SASLError as exc:
            return self._sasl_outcome(Failure(exc.condition))
        self._sasl = self._new_sasl()
        self._sasl_mechanism = mechanism
        self._enter(Phase.SASL)
        return self._sasl_outcome(self._sasl.start(mechanism, initial))

    def _sasl_step(self, el: Element) -> Event | None:
        try:
            data = decode_payload(el.text)
        except SASLError as exc:
            return self._sasl_outcome(Failure(exc.condition))
        return self._sasl_outcome(self._sasl.respond(data))  # type: ignore[union-attr]

    def _sasl_outcome(self, outcome: Any) -> Event | None:
        if isinstance(outcome, Challenge):
            self._out.append(_sasl_element("challenge", outcome.data))
            self._enter(Phase.SASL)
            return None
        if isinstance(outcome, (NeedScramCredentials, NeedPasswordCheck)):
            self._waiting = True
            self._sasl_account = outcome.username
            return outcome
        if isinstance(outcome, Success) and self.refuse_success is not None:
            outcome = Failure("account-disabled", self.refuse_success)  # RFC 6120 §6.5.1
        if isinstance(outcome, Success):
            self._out.append(_sasl_element("success", outcome.data))
            self.username = outcome.username
            self._restart()
            self._enter(Phase.HEADER)
            return Authenticated(outcome.username, self._sasl_mechanism)
        assert isinstance(outcome, Failure)
        text = f"<text xml:lang='en'>{_escape(outcome.text)}</text>" if outcome.text else ""
        self._out.append(
            f"<failure xmlns='{ns.SASL}'><{outcome.condition}/>{text}</failure>".encode()
        )
        if self.phase is Phase.SASL:
            self._enter(Phase.AUTH)
        self._sasl_failures += 1
        failed = AuthFailed(self._sasl_account, outcome.condition)
        self._sasl_account = ""
        if self._sasl_failures >= self.settings.max_sasl_attempts:
            text = "too many failed authentication attempts"
            self._ready.append(self.stream_error("policy-violation", text))
        return failed


_STARTTLS = qname(ns.TLS, "starttls")
_AUTH = qname(ns.SASL, "auth")
_RESPONSE = qname(ns.SASL, "response")
_ABORT = qname(ns.SASL, "abort")
_BIND = qname(ns.BIND, "bind")
_SESSION = qname(ns.SESSION, "session")


def _sasl_element(name: str, data: bytes | None) -> bytes:
    payload = encode_payload(data) if data is not None else ""
    return f"<{name} xmlns='{ns.SASL}'>{payload}</{name}>".encode()


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )


def _version_ok(version: str) -> bool:
    major, _, _minor = version.partition(".")
    return major == "1"
