"""Directory contacts: LDAP groups become shared roster groups, vCards come from the directory,
and members of the admin group get admin rights. Active only with `[auth] backend = "ldap"`.

Every `refresh_interval` ([auth.ldap]) the users and groups are read from the directory. Each
member of a group (up to `max_group_size` members) gets every other member as a roster item
with the directory's display name, the group's name as roster group and subscription "both",
so presence flows as for a mutual subscription without anyone asking. The items are written
through the roster service like any change (durable, versioned, pushed to online clients);
which items the directory manages, and what a personal item looked like before, is kept in the
keyval store "directory_roster", so an item that leaves the directory goes back to what the
user had. Directory items are read-only: a roster set or removal of one gets <not-allowed/>.
Personal items beside them work as before.

`host.services["directory"]` offers `is_admin(bare)` (server.admins or the LDAP admin group)
and `display_name(local)`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, first_child, qname, reply, sub
from ..router import StanzaEvent
from ..storage import StorageError
from .roster import Doc, RosterError, blank

if TYPE_CHECKING:
    from auth.ldap import DirectoryUser, LdapAuth

    from ..session import Session

MANAGED_STORE = "directory_roster"
READY_WAIT = 10.0  # seconds a first roster request waits for the first directory read


@dataclass(slots=True)
class Snapshot:
    names: dict[str, str] = field(default_factory=dict)  # username -> display name
    groups: dict[str, list[str]] = field(default_factory=dict)  # roster group -> usernames
    admins: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)  # every group read, by name

    def contacts(self, domain: str) -> dict[str, dict[str, dict[str, Any]]]:
        """bare JID -> {contact bare JID: {"name", "groups"}} as the directory wants it."""
        wanted: dict[str, dict[str, dict[str, Any]]] = {}
        for group, members in sorted(self.groups.items()):
            for user in members:
                mine = wanted.setdefault(f"{user}@{domain}", {})
                for other in members:
                    if other != user:
                        item = mine.setdefault(
                            f"{other}@{domain}", {"name": self.names.get(other), "groups": []}
                        )
                        item["groups"].append(group)
        return wanted


def ldap_of(auth: Any) -> LdapAuth | None:
    from auth.ldap import LdapAuth

    if isinstance(auth, LdapAuth):
        return auth
    inner = getattr(auth, "ldap", None)
    return inner if isinstance(inner, LdapAuth) else None


class Directory:
    """The "directory" service of one host, and the refresh loop."""

    def __init__(self, module: Module, ldap: LdapAuth | None) -> None:
        self.module = module
        self.host = module.host
        self.ldap = ldap
        self.store = module.open_keyval(MANAGED_STORE)
        self.snapshot: Snapshot | None = None
        self.wanted: dict[str, dict[str, dict[str, Any]]] = {}
        self.ready = trio.Event()
        self.started = False
        self.warned: dict[str, int] = {}  # oversized groups already logged, with their size
        self.config_admins: set[str] = set()  # server.admins, known from the first login

    # ---- service API ------------------------------------------------------------------------

    def is_admin(self, bare: str) -> bool:
        """Admin rights: listed in server.admins or a member of [auth.ldap] admin_group."""
        if bare.lower() in self.config_admins:
            return True
        local, _, domain = bare.partition("@")
        snapshot = self.snapshot
        return domain == self.host.domain and snapshot is not None and local in snapshot.admins

    def display_name(self, local: str) -> str | None:
        return self.snapshot.names.get(local) if self.snapshot is not None else None

    def is_managed(self, user: str, contact: str) -> bool:
        return contact in self.wanted.get(user, {})

    # ---- refresh ----------------------------------------------------------------------------

    def start(self, session: Session) -> None:
        """Hosts have no nursery of their own: the loop starts with the first login."""
        if self.started or self.ldap is None:
            return
        self.started = True
        admins = session.server.config.server["admins"]
        self.config_admins = {a.lower() for a in admins}
        session.server.nursery_soon(self.refresh_forever)

    async def refresh_forever(self) -> None:
        assert self.ldap is not None
        while True:
            try:
                await self.refresh()
            except Exception:  # the next round tries again; logins do not depend on this
                self.module.log.exception("directory refresh failed")
            finally:
                self.ready.set()
            await trio.sleep(self.ldap.s["refresh_interval"])

    async def read(self) -> Snapshot:
        """Users, groups and admins from the directory (in a worker thread)."""
        from auth.ldap import Group

        ldap = self.ldap
        assert ldap is not None
        d, s = ldap.directory, ldap.s

        def work(conn: Any) -> tuple[list[DirectoryUser], list[Group], list[str]]:
            users = d.list_users(conn)
            groups = d.list_groups(conn, users)
            admins = d.read_group(conn, s["admin_group"], users).members if s["admin_group"] else []
            return users, groups, admins

        users, groups, admins = await ldap.run(d.with_service, work)
        ldap.known = {u.username for u in users}
        snapshot = Snapshot(admins=set(admins))
        for user in users:
            snapshot.names[user.username] = user.display_name(s["display_name_attribute"]) or ""
        for group in groups:
            snapshot.sizes[group.name] = len(group.members)
            if len(group.members) > s["max_group_size"]:
                if self.warned.get(group.name) == len(group.members):
                    continue  # said already
                self.warned[group.name] = len(group.members)
                self.module.log.warning(
                    "group %r has %d members (max_group_size %d): not a roster group",
                    group.name,
                    len(group.members),
                    s["max_group_size"],
                )
                continue
            snapshot.groups.setdefault(group.name, []).extend(group.members)
        return snapshot

    async def refresh(self) -> None:
        try:
            snapshot = await self.read()
        except Exception as exc:  # DirectoryUnavailable: keep the last state
            self.module.log.warning("directory contacts not refreshed: %s", exc)
            return
        self.snapshot = snapshot
        wanted = snapshot.contacts(self.host.domain)
        users = set(wanted) | set(self.wanted)
        if not self.ready.is_set():  # first round: also users the store remembers
            users |= {f"{u}@{self.host.domain}" for u in await self.store.users()}
        greet: list[tuple[str, str, bool]] = []
        for user in sorted(users):
            if self.ready.is_set() and wanted.get(user) == self.wanted.get(user):
                continue
            greet += await self.reconcile(user, wanted.get(user, {}))
        self.wanted = wanted
        await self.exchange_presence(greet)

    async def reconcile(
        self, user: str, want: dict[str, dict[str, Any]]
    ) -> list[tuple[str, str, bool]]:
        """Make `user`'s roster hold exactly the directory items `want`; returns presence to
        exchange: (user, contact, added)."""
        rosters = self.host.services["roster"]
        local = user.partition("@")[0]
        record = await self.store.get(local) or {"items": {}}
        managed: dict[str, Any] = record["items"]
        greet = []
        current = (await rosters.load(user)).items  # read once: loads of offline users are reads
        for contact, item in want.items():
            if managed.get(contact, {}).get("want") == item and _in_place(current, contact, item):
                continue
            prior = managed[contact]["prior"] if contact in managed else None
            captured: list[Doc] = []

            def change(doc: Doc, item: dict[str, Any] = item, captured: list = captured) -> Doc:
                captured.append(doc)
                return _directory_item(doc, item)

            try:
                result = await rosters.apply(user, contact, change)
            except (RosterError, StorageError) as exc:
                self.module.log.warning("cannot add %s to the roster of %s: %s", contact, user, exc)
                continue
            if contact not in managed:
                prior = _visible(captured[0]) if captured and captured[0]["listed"] else None
            managed[contact] = {"want": item, "prior": prior}
            if result.old["sub"] != "both":
                greet.append((user, contact, True))
        for contact in [c for c in managed if c not in want]:
            prior = managed.pop(contact)["prior"]
            try:
                await rosters.apply(user, contact, lambda doc, p=prior: _restored(doc, p))
            except (RosterError, StorageError) as exc:
                self.module.log.warning("cannot restore %s for %s: %s", contact, user, exc)
            greet.append((user, contact, False))
        await self.store.set(local, {"items": managed} if managed else None)
        return greet

    async def exchange_presence(self, greet: list[tuple[str, str, bool]]) -> None:
        """New directory contacts see each other's presence at once; removed ones go dark."""
        presence = self.host.services.get("presence")
        if presence is None:
            return
        for user, contact, added in greet:
            if added:
                await presence.send_current(user, contact)
            else:
                await presence.send_unavailable(user, contact)


def _in_place(items: dict[str, Doc], contact: str, item: dict[str, Any]) -> bool:
    doc = items.get(contact)
    return (
        doc is not None
        and doc["listed"]
        and doc["sub"] == "both"
        and set(item["groups"]) <= set(doc["groups"])
    )


def _visible(doc: Doc) -> Doc:
    return {k: doc[k] for k in ("listed", "name", "groups", "sub", "ask", "approved")}


def _directory_item(doc: Doc, item: dict[str, Any]) -> Doc:
    """The item as the directory wants it; a personal name and groups are kept beside."""
    groups = list(dict.fromkeys([*doc["groups"], *item["groups"]])) if doc["listed"] else []
    if not doc["listed"]:
        groups = list(item["groups"])
    name = doc["name"] if doc["listed"] and doc["name"] else item["name"]
    return {
        **doc,
        "listed": True,
        "name": name,
        "groups": groups,
        "sub": "both",
        "ask": False,
        "pending_in": False,
        "request": None,
    }


def _restored(doc: Doc, prior: Doc | None) -> Doc:
    """Back to the personal item the user had before the directory, or gone."""
    if prior is None:
        return {**blank(), "ver": doc["ver"], "listed": False}
    return {**doc, **prior, "pending_in": False, "request": None}


# ---- vCards from the directory ---------------------------------------------------------------


def directory_vcard(user: DirectoryUser, name_attribute: str) -> Element:
    from ..protocol.stanza import element

    vcard = element(ns.VCARD, "vCard")
    name = user.display_name(name_attribute)
    if name:
        sub(vcard, ns.VCARD, "FN", name)
        sub(vcard, ns.VCARD, "NICKNAME", name)
    mail = user.text("mail")
    if mail:
        email = sub(vcard, ns.VCARD, "EMAIL")
        sub(email, ns.VCARD, "INTERNET")
        sub(email, ns.VCARD, "USERID", mail)
    phone = user.text("telephoneNumber")
    if phone:
        tel = sub(vcard, ns.VCARD, "TEL")
        sub(tel, ns.VCARD, "VOICE")
        sub(tel, ns.VCARD, "NUMBER", phone)
    photo = (user.attributes.get("jpegphoto") or [b""])[0]
    if photo:
        el = sub(vcard, ns.VCARD, "PHOTO")
        sub(el, ns.VCARD, "TYPE", "image/jpeg")
        sub(el, ns.VCARD, "BINVAL", base64.b64encode(photo).decode())
    return vcard


# ---- loading ---------------------------------------------------------------------------------


def load(module: Module) -> None:
    host = module.host
    ldap = ldap_of(host.auth)
    directory = Directory(module, ldap)
    host.services["directory"] = directory
    if ldap is None:
        return  # accounts are internal: only is_admin (server.admins) is offered

    async def directory_user(local: str) -> DirectoryUser | None:
        internal = getattr(host.auth, "internal", None)
        if internal is not None and await internal.user_exists(local):
            return None  # a local account: its vCard is its own
        try:
            return await ldap.lookup(local)
        except Exception:  # unavailable: the vcard module answers from storage
            return None

    async def bound(session: Session) -> bool:
        directory.start(session)
        return False

    async def wait_ready(event: StanzaEvent) -> bool:
        if event.origin is not None and not directory.ready.is_set():
            directory.start(event.origin)
            with trio.move_on_after(READY_WAIT):
                await directory.ready.wait()
        return False  # the roster and presence modules answer

    async def roster_set(event: StanzaEvent) -> bool:
        session, query = event.origin, first_child(event.stanza)
        if session is None or query is None:
            return False
        for item in query.iterchildren(qname(ns.ROSTER, "item")):
            try:
                contact = str(JID.parse(item.get("jid") or "").bare)
            except JIDError:
                return False  # the roster module answers with the right error
            if directory.is_managed(session.bare, contact):
                return await event.reply_error(
                    "not-allowed", "this contact comes from the directory and cannot be changed"
                )
        return False

    async def unsubscribe(event: StanzaEvent) -> bool:
        """Ending the subscription with a directory contact would silently break the shared
        group for both; refused like a roster change."""
        session, to = event.origin, event.to
        if event.stanza.get("type") not in ("unsubscribe", "unsubscribed"):
            return False
        if session is None or to is None or not directory.is_managed(session.bare, str(to.bare)):
            return False
        return await event.reply_error("not-allowed", "this contact comes from the directory")

    async def vcard_get(event: StanzaEvent) -> bool:
        target = event.to if event.to is not None else None
        local = (target.local if target is not None else None) or (
            event.origin.jid.local if event.origin is not None and event.origin.jid else None
        )
        user = await directory_user(local) if local else None
        if user is None:
            return False
        result = reply(event.stanza)
        result.append(directory_vcard(user, ldap.s["display_name_attribute"]))
        return await event.reply(result)

    async def vcard_set(event: StanzaEvent) -> bool:
        session = event.origin
        if session is None or session.jid is None:
            return False
        if await directory_user(session.jid.local or "") is None:
            return False
        return await event.reply_error("not-allowed", "your vCard comes from the directory")

    module.hook("session-bound", bound)
    module.hook(f"iq-get/self/{ns.ROSTER}:query", wait_ready, 1)
    module.hook("pre-presence/self", wait_ready, 1)
    module.hook(f"iq-set/self/{ns.ROSTER}:query", roster_set, 1)
    module.hook("pre-presence/bare", unsubscribe, 1)
    for scope in ("self", "bare"):
        module.hook(f"iq-get/{scope}/{ns.VCARD}:vCard", vcard_get, 1)
    module.hook(f"iq-set/self/{ns.VCARD}:vCard", vcard_set, 1)


spec = ModuleSpec(
    name="directory",
    summary="LDAP groups as shared roster groups, vCards and admins from the directory",
    load=load,
    options={},
    depends=("roster", "presence"),
    implements=(
        Implements(
            "RFC 6121",
            status="partial",
            note="§2 roster items from directory groups (shared, read-only), subscription both",
        ),
        Implements("XEP-0054", status="partial", note="vCards from directory attributes"),
    ),
)
