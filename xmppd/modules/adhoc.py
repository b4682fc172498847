"""XEP-0050 Ad-Hoc Commands: the server offers commands to its users, each a short dialogue of
XEP-0004 data forms.

Other modules register commands with `host.services["adhoc"].register(Command(...))`:
`adhoc_admin` the XEP-0133 set (admins only), `abuse` the stranger setting (every user). A
command is a list of `Step`s (each builds one form from what was submitted so far and may
check its submission) and a `run` function that acts on all the values and returns a `Done`.

Protocol (XEP-0050 §3, §4):
- disco#info of the server has the feature `http://jabber.org/protocol/commands`; disco#items
  at that node lists the commands the requester may run (none for others); disco#info at a
  command's node answers the `automation/command-node` identity with the commands and
  jabber:x:data features (`forbidden` for a command the requester may not run).
- `execute` (no sessionid) opens a session and answers the first form with status
  `executing` and the allowed actions (`next`, `prev`, `complete`); a command with no step
  runs at once. `next` / `prev` move between steps, `complete` on the last one submits
  everything, `cancel` ends the session (`canceled`). `execute` inside a session is the
  default action named by `<actions execute=...>`.
- Errors (§4.6): an unknown node `item-not-found`; a command the requester may not run
  `forbidden`; an unknown action `bad-request` + `<malformed-action/>`; an action not offered
  now `bad-request` + `<bad-action/>`; an unknown session or one of another requester
  `bad-request` + `<bad-sessionid/>`; a session idle for SESSION_TTL `not-allowed` +
  `<session-expired/>`; a missing or wrong form `bad-request` + `<bad-payload/>`.
Limits: MAX_SESSIONS open sessions per account (the oldest is dropped), SESSION_TTL seconds.
Sessions are in memory: a restart forgets them (a client then gets bad-sessionid).
"""

from __future__ import annotations

import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..module import Implements, Module, ModuleSpec
from ..protocol import forms
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, element, error_reply, first_child, qname, reply, sub
from ..roles import roles_of
from ..router import StanzaEvent

if TYPE_CHECKING:
    from ..host import Host
    from ..session import Session

COMMANDS = "http://jabber.org/protocol/commands"
SESSION_TTL = 600.0  # seconds a session may sit between two steps
MAX_SESSIONS = 5  # open sessions per account
ACTIONS = ("execute", "next", "prev", "complete", "cancel")
_X = qname(ns.DATA_FORMS, "x")


class CommandError(Exception):
    """Refuse a request with a stanza error; `app` is a XEP-0050 condition (bad-payload...)."""

    def __init__(self, condition: str, text: str = "", app: str | None = None) -> None:
        super().__init__(text or condition)
        self.condition, self.text, self.app = condition, text, app


@dataclass(slots=True)
class Context:
    """What a step or a command's run sees: the requester and the values submitted so far."""

    host: Host
    session: Session  # the requesting session; `session.server` is the server
    values: dict[str, list[str]] = field(default_factory=dict)

    @property
    def requester(self) -> str:
        return self.session.bare

    def one(self, var: str, default: str = "") -> str:
        try:
            return forms.single(self.values, var, default) or default
        except forms.FormError as exc:
            raise CommandError("bad-request", str(exc), "bad-payload") from None

    def many(self, var: str) -> list[str]:
        return [v for v in self.values.get(var, []) if v.strip()]


@dataclass(frozen=True, slots=True)
class Step:
    """One form: `build(ctx)` returns its fields (or an awaitable of them); `check(ctx)` may
    refuse what was submitted."""

    build: Callable[[Context], list[forms.Field] | Awaitable[list[forms.Field]]]
    title: str = ""
    instructions: str = ""
    check: Callable[[Context], None] | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A completed command: a note, and maybe a result form."""

    note: str = ""
    note_type: str = "info"  # info | warn | error (XEP-0050 §3.4)
    fields: list[forms.Field] = field(default_factory=list)
    title: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    node: str
    name: str
    run: Callable[[Context], Awaitable[Done]]
    steps: tuple[Step, ...] = ()
    # Who may see and run it: an async predicate on the requester's bare JID.
    allowed: Callable[[str], Awaitable[bool]] | None = None
    form_type: str | None = None  # FORM_TYPE of its forms (XEP-0133: .../admin)


@dataclass(slots=True)
class Dialogue:
    """One open session of a command."""

    id: str
    owner: str  # full JID of the session that opened it
    command: Command
    values: dict[str, list[str]]
    step: int = 0
    touched: float = field(default_factory=time.monotonic)


class AdHoc:
    """The "adhoc" service of a host: the registered commands and the open sessions."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.host = module.host
        self.commands: dict[str, Command] = {}
        self.dialogues: dict[str, Dialogue] = {}

    def register(self, command: Command) -> None:
        if command.node in self.commands:
            raise ValueError(f"ad-hoc command {command.node!r} registered twice")
        self.commands[command.node] = command

    async def may_run(self, command: Command, bare: str) -> bool:
        return command.allowed is None or await command.allowed(bare)

    # ---- disco ------------------------------------------------------------------------------

    async def disco_items(self, event: StanzaEvent) -> bool:
        if event.stanza[0].get("node") != COMMANDS or event.origin is None:
            return False
        result = reply(event.stanza)
        query = sub(result, ns.DISCO_ITEMS, "query", node=COMMANDS)
        for node, command in sorted(self.commands.items()):
            if await self.may_run(command, event.origin.bare):
                sub(
                    query,
                    ns.DISCO_ITEMS,
                    "item",
                    jid=self.host.domain,
                    node=node,
                    name=command.name,
                )
        return await event.reply(result)

    async def disco_info(self, event: StanzaEvent) -> bool:
        node = event.stanza[0].get("node")
        if node == COMMANDS:  # XEP-0050 §2.3: the commands node itself
            result = reply(event.stanza)
            query = sub(result, ns.DISCO_INFO, "query", node=COMMANDS)
            sub(query, ns.DISCO_INFO, "identity", category="automation", type="command-list")
            return await event.reply(result)
        command = self.commands.get(node or "")
        if command is None or event.origin is None:
            return False  # the disco module answers (or refuses) other nodes
        if not await self.may_run(command, event.origin.bare):
            return await event.reply_error("forbidden", "this command is for admins")
        result = reply(event.stanza)
        query = sub(result, ns.DISCO_INFO, "query", node=node)
        sub(
            query,
            ns.DISCO_INFO,
            "identity",
            category="automation",
            type="command-node",
            name=command.name,
        )
        for var in (COMMANDS, ns.DATA_FORMS):
            sub(query, ns.DISCO_INFO, "feature", var=var)
        return await event.reply(result)

    # ---- execution ----------------------------------------------------------------------------

    async def handle(self, event: StanzaEvent) -> bool:
        session, request = event.origin, first_child(event.stanza)
        assert session is not None and request is not None
        try:
            answer = await self._answer(session, request)
        except CommandError as exc:
            app = element(COMMANDS, exc.app) if exc.app else None
            error = error_reply(event.stanza, exc.condition, exc.text or None, app_condition=app)
            return await event.reply(error)
        result = reply(event.stanza)
        result.append(answer)
        return await event.reply(result)

    async def _answer(self, session: Session, request: Element) -> Element:
        action = request.get("action", "execute")
        if action not in ACTIONS:
            raise CommandError("bad-request", f"unknown action {action!r}", "malformed-action")
        command = self.commands.get(request.get("node") or "")
        if command is None:
            raise CommandError("item-not-found", "no such command")
        if not await self.may_run(command, session.bare):
            raise CommandError("forbidden", "this command is for admins")
        sessionid = request.get("sessionid")
        if sessionid is None:
            if action != "execute":
                raise CommandError("bad-request", "start a command with execute", "bad-action")
            return await self._start(session, command)
        dialogue = self._dialogue(session, command, sessionid)
        if action == "cancel":
            del self.dialogues[dialogue.id]
            return self._status(dialogue, "canceled")
        last = dialogue.step == len(command.steps) - 1
        if action == "execute":
            action = "complete" if last else "next"
        if action == "prev":
            if dialogue.step == 0:
                raise CommandError("bad-request", "this is the first step", "bad-action")
            dialogue.step -= 1
            return await self._form(session, dialogue)
        if (action == "next") == last:
            wanted = "complete" if last else "next"
            raise CommandError("bad-request", f"the action here is {wanted}", "bad-action")
        self._take(session, dialogue, request)
        if action == "next":
            dialogue.step += 1
            return await self._form(session, dialogue)
        del self.dialogues[dialogue.id]
        done = await command.run(self._context(session, dialogue.values))
        return self._completed(dialogue, done)

    async def _start(self, session: Session, command: Command) -> Element:
        dialogue = Dialogue(secrets.token_hex(8), session.full, command, {})
        if not command.steps:
            done = await command.run(self._context(session, {}))
            return self._completed(dialogue, done)
        mine = [d for d in self.dialogues.values() if d.owner.partition("/")[0] == session.bare]
        if len(mine) >= MAX_SESSIONS:  # the oldest gives way
            del self.dialogues[min(mine, key=lambda d: d.touched).id]
        self.dialogues[dialogue.id] = dialogue
        return await self._form(session, dialogue)

    def _dialogue(self, session: Session, command: Command, sessionid: str) -> Dialogue:
        dialogue = self.dialogues.get(sessionid)
        if dialogue is None or dialogue.owner != session.full or dialogue.command is not command:
            raise CommandError("bad-request", "no such session", "bad-sessionid")
        if time.monotonic() - dialogue.touched > SESSION_TTL:
            del self.dialogues[sessionid]
            raise CommandError("not-allowed", "the session expired; start again", "session-expired")
        dialogue.touched = time.monotonic()
        return dialogue

    def _take(self, session: Session, dialogue: Dialogue, request: Element) -> None:
        """Merge the submitted form into the session's values and let the step check them."""
        x = request.find(_X)
        if x is None:
            raise CommandError("bad-request", "submit the form", "bad-payload")
        try:
            values = forms.parse_submission(x, dialogue.command.form_type)
        except forms.FormError as exc:
            raise CommandError("bad-request", str(exc), "bad-payload") from None
        merged = {**dialogue.values, **values}
        step = dialogue.command.steps[dialogue.step]
        if step.check is not None:
            step.check(self._context(session, merged))
        dialogue.values = merged

    def _context(self, session: Session, values: dict[str, list[str]]) -> Context:
        return Context(self.host, session, dict(values))

    # ---- answers ------------------------------------------------------------------------------

    def _status(self, dialogue: Dialogue, status: str) -> Element:
        return element(
            COMMANDS, "command", node=dialogue.command.node, sessionid=dialogue.id, status=status
        )

    async def _form(self, session: Session, dialogue: Dialogue) -> Element:
        command, index = dialogue.command, dialogue.step
        step = command.steps[index]
        answer = self._status(dialogue, "executing")
        last = index == len(command.steps) - 1
        actions = sub(answer, COMMANDS, "actions", execute="complete" if last else "next")
        if index > 0:
            sub(actions, COMMANDS, "prev")
        sub(actions, COMMANDS, "complete" if last else "next")
        fields = step.build(self._context(session, dialogue.values))
        if inspect.isawaitable(fields):
            fields = await fields
        title = step.title or command.name
        answer.append(
            forms.build(command.form_type, fields, title=title, instructions=step.instructions)
        )
        return answer

    def _completed(self, dialogue: Dialogue, done: Done) -> Element:
        answer = self._status(dialogue, "completed")
        if done.note:
            sub(answer, COMMANDS, "note", done.note, type=done.note_type)
        if done.fields:
            answer.append(
                forms.build(
                    dialogue.command.form_type,
                    done.fields,
                    kind="result",
                    title=done.title or dialogue.command.name,
                )
            )
        return answer


def admins_only(host: Host) -> Callable[[str], Awaitable[bool]]:
    """The `allowed` predicate of admin commands (xmppd/roles.py)."""
    roles = roles_of(host)

    async def allowed(bare: str) -> bool:
        return await roles.role_settled(bare) == "admin"

    return allowed


def load(module: Module) -> None:
    service = AdHoc(module)
    module.host.services["adhoc"] = service
    module.add_feature(COMMANDS)
    # Before the disco module (priority 0), which answers every other node.
    module.hook("iq-get/host/" + ns.DISCO_ITEMS + ":query", service.disco_items, 1)
    module.hook("iq-get/host/" + ns.DISCO_INFO + ":query", service.disco_info, 1)
    module.hook_iq("set/host", COMMANDS, "command", service.handle)


spec = ModuleSpec(
    name="adhoc",
    summary="ad-hoc commands: data-form dialogues the server offers its users (XEP-0050)",
    load=load,
    implements=(Implements("XEP-0050", "1.3.0"),),
)
