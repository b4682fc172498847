"""Anti-abuse checks on what accounts send and receive, beyond the per-connection limits.

Outgoing messages with a body (any transport: TCP, WebSocket, BOSH, JSON channels; 1:1, to
rooms, private room messages) pass, before anything routes, copies or archives them:
- the per-account rate: one token bucket per account across all its sessions
  (`[modules.abuse] messages_per_second`, `message_burst`; xmppd/ratelimit.py);
- the word filter (`[filter]`, xmppd/wordfilter.py) on the body and subject.
A refused message gets a `policy-violation` error (RFC 6120 §8.3.3.14, "a message contains
words that are prohibited by the service") whose text names the limit or the rule; nothing is
delivered, archived or stored offline. JSON-channel clients get the same text as the error of
their push (channels/user.py, channels/rooms.py call `check_message` themselves and their
session carries `abuse_checked`, so a message is counted once).

Strangers (a JID with no item in the account's roster; rooms, the server and the account's own
resources are never strangers):
- an account may refuse messages (chat and normal) and subscription requests from strangers:
  the setting is the ad-hoc command `urn:xmppd:commands:strangers` ("Messages from
  strangers", any user, on the server's JID), stored in the keyval store `stranger_policy`;
  without a setting, `limited` accounts refuse them (`[server] limited_block_strangers`);
  the sender gets `policy-violation` with a text saying so;
- a `limited` account (xmppd/roles.py) may not ask a stranger for a subscription: only
  contacts that are subscribed to it, asked it first, or come from the directory
  (`not-allowed` with a text).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import loader
from ..events import AccountDeleted
from ..module import Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.forms import Field
from ..protocol.stanza import qname
from ..ratelimit import TokenBucket
from ..roles import roles_of
from ..router import StanzaEvent
from ..storage import StorageError
from ..wordfilter import WordFilter, refusal_text
from .adhoc import Command, Context, Done, Step

STRANGERS_NODE = "urn:xmppd:commands:strangers"
POLICY_STORE = "stranger_policy"
FILTER = 200  # before blocking (100), carbons, archives and delivery
_BODY = qname(ns.CLIENT, "body")
_SUBJECT = qname(ns.CLIENT, "subject")
CHECKED_TYPES = (None, "normal", "chat", "groupchat")
MAX_CACHED = 10_000  # stranger settings kept in memory
MAX_BUCKETS = 10_000  # beyond: refilled buckets are dropped before a new one is made


@dataclass(frozen=True, slots=True)
class Refusal:
    condition: str
    text: str


class Abuse:
    """The "abuse" service of a host."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.host = module.host
        self.roles = roles_of(module.host)
        self.rate: float = module.options["messages_per_second"]
        self.burst: int = module.options["message_burst"]
        self.buckets: dict[str, TokenBucket] = {}
        self.policies = module.open_keyval(POLICY_STORE)
        self.cached: dict[str, bool | None] = {}

    @property
    def word_filter(self) -> WordFilter | None:
        return self.host.services.get("word_filter")

    # ---- outgoing messages ----------------------------------------------------------------

    def check_message(self, bare: str, *texts: str | None) -> Refusal | None:
        """Count one message of `bare` against its rate and check its texts; the refusal,
        or None when it may go."""
        now = time.monotonic()
        bucket = self.buckets.get(bare)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = TokenBucket(self.rate, self.burst, now, limit="account_messages")
            self.buckets[bare] = bucket
        if not bucket.allow(now):
            return Refusal(
                "policy-violation",
                f"more than {self.burst} messages at once or {self.rate:g} per second from this "
                "account (modules.abuse.messages_per_second); slow down",
            )
        rules = self.word_filter
        rule = rules.match(*texts) if rules else None
        if rule is not None:
            self.module.log.info("message from %s refused by filter rule %r", bare, rule.name)
            return Refusal("policy-violation", refusal_text(rule))
        return None

    async def outgoing(self, event: StanzaEvent) -> bool:
        """`pre-message/*`: from our own clients, before routing."""
        session, stanza = event.origin, event.stanza
        if session is None or getattr(session, "abuse_checked", False):
            return False
        if stanza.get("type") not in CHECKED_TYPES:
            return False
        body, subject = stanza.find(_BODY), stanza.find(_SUBJECT)
        if body is None and subject is None:
            return False  # chat states, markers, receipts: the connection's limits apply
        refusal = self.check_message(
            session.bare,
            body.text if body is not None else None,
            subject.text if subject is not None else None,
        )
        if refusal is None:
            return False
        return await event.reply_error(refusal.condition, refusal.text)

    def _prune(self, now: float) -> None:
        """Forget the buckets that have refilled: they are no different from new ones (a
        bucket is not dropped when its sessions end, or reconnecting would refill it)."""
        for bare, bucket in list(self.buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst:
                del self.buckets[bare]

    # ---- strangers ------------------------------------------------------------------------

    async def blocks_strangers(self, bare: str) -> bool:
        """The account's own choice, else the default of its role."""
        if bare not in self.cached:
            try:
                doc = await self.policies.get(bare.partition("@")[0])
            except StorageError:  # a database outage must not stop chat: the role's default
                return self._default(bare)
            if len(self.cached) >= MAX_CACHED:
                self.cached.clear()
            self.cached[bare] = None if doc is None else bool(doc.get("block"))
        choice = self.cached[bare]
        return self._default(bare) if choice is None else choice

    def _default(self, bare: str) -> bool:
        return self.roles.limited_block_strangers and self.roles.is_limited(bare)

    async def set_stranger_policy(self, bare: str, block: bool | None) -> None:
        """An account's choice (None: back to its role's default)."""
        local = bare.partition("@")[0]
        await self.policies.set(local, None if block is None else {"block": block})
        self.cached[bare] = block

    async def knows(self, user: str, contact: str, *, outgoing: bool = False) -> bool:
        """Is `contact` (a bare JID) no stranger to `user`? Going out (a limited account's
        request) only contacts subscribed to it, asking it, or from the directory count."""
        rosters = self.host.services.get("roster")
        if rosters is None:
            return True  # no rosters, no strangers
        doc = await rosters.peek(user, contact)
        if doc is None:
            return False
        if outgoing:
            return doc["sub"] != "none" or doc["pending_in"]
        return doc["listed"] or doc["sub"] != "none"

    def never_stranger(self, user: str, sender: Any) -> bool:
        return (
            sender.local is None  # a server
            or sender.domain in self.host.components  # a room, an occupant
            or f"{sender.local}@{sender.domain}" == user
        )

    async def incoming(self, event: StanzaEvent) -> bool:
        """`message/bare|full` and `presence/bare` on the recipient's host."""
        sender, to, stanza = event.sender, event.to, event.stanza
        if sender is None or to is None or to.local is None:
            return False
        type_ = stanza.get("type")
        if event.kind == "message" and type_ not in (None, "normal", "chat"):
            return False
        if event.kind == "presence" and type_ != "subscribe":
            return False
        user = f"{to.local}@{to.domain}"
        if self.never_stranger(user, sender) or not await self.blocks_strangers(user):
            return False
        contact = f"{sender.local}@{sender.domain}"
        if await self.knows(user, contact):
            return False
        what = "messages" if event.kind == "message" else "subscription requests"
        text = f"{user} accepts {what} only from contacts"
        return await event.reply_error("policy-violation", text)

    async def limited_request(self, event: StanzaEvent) -> bool:
        """`pre-presence/bare|full`: a limited account asking a stranger for a subscription."""
        session, to = event.origin, event.to
        if session is None or to is None or event.stanza.get("type") != "subscribe":
            return False
        if to.local is None:
            return False
        text = await self.subscription_refusal(session.bare, f"{to.local}@{to.domain}")
        return text is not None and await event.reply_error("not-allowed", text)

    async def subscription_refusal(self, bare: str, contact: str) -> str | None:
        """Why `bare` may not ask `contact` for a subscription (a limited account asking a
        stranger), or None; JSON channels ask before routing, as their pushes get the answer."""
        if not self.roles.is_limited(bare) or await self.knows(bare, contact, outgoing=True):
            return None
        return "this account may not ask strangers for a subscription; they may ask it"

    async def account_deleted(self, event: AccountDeleted) -> bool:
        await self.policies.set(event.local, None)
        self.cached.pop(event.bare, None)
        self.buckets.pop(event.bare, None)
        return False

    # ---- the setting, as an ad-hoc command -------------------------------------------------

    def command(self) -> Command:
        async def fields(ctx: Context) -> list[Field]:
            current = "1" if await self.blocks_strangers(ctx.requester) else "0"
            label = "Refuse messages and subscription requests from people not in my contacts"
            return [Field("block", "boolean", label, [current], required=True)]

        async def run(ctx: Context) -> Done:
            block = ctx.one("block", "0") in ("1", "true")
            await self.set_stranger_policy(ctx.requester, block)
            return Done("strangers are now refused" if block else "strangers may now write")

        steps = (Step(fields, "Messages from strangers"),)
        return Command(STRANGERS_NODE, "Messages from strangers", run, steps)


def load(module: Module) -> None:
    host = module.host
    service = Abuse(module)
    host.services["abuse"] = service
    for scope in ("bare", "full", "host", "self"):
        module.hook(f"pre-message/{scope}", service.outgoing, FILTER)
    for scope in ("bare", "full"):
        module.hook(f"message/{scope}", service.incoming, FILTER)
        module.hook(f"pre-presence/{scope}", service.limited_request, FILTER)
    module.hook("presence/bare", service.incoming, FILTER)
    module.hook("account-deleted", service.account_deleted)

    def offer_setting() -> None:  # the ad-hoc module may load after this one
        adhoc = host.services.get("adhoc")
        if adhoc is not None:
            adhoc.register(service.command())

    loader.when_loaded(host, offer_setting)


spec = ModuleSpec(
    name="abuse",
    summary="per-account message rate, word filter, strangers refused, limited accounts",
    load=load,
    options={
        "messages_per_second": Option(
            float, 10.0, "messages with a body per account, all its sessions together", min=0.1
        ),
        "message_burst": Option(
            int, 60, "messages an account may send at once before the rate applies", min=1
        ),
    },
)
