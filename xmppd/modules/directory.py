"""Directory contacts: LDAP groups become shared roster groups, vCards come from the directory,
and members of the admin group get admin rights. Active only with `[auth] backend = "ldap"`.

Groups are virtual roster groups, as ejabberd's and Prosody's shared rosters do it: nothing is
stored per pair. Every `refresh_interval` ([auth.ldap]) and on demand (`request_refresh`, also
asked for when someone unknown to the last read logs in) users and groups are read into a
`Snapshot` holding each group's members once (O(members) per group) and each user's groups.
The directory is the roster's `shared` source (`Rosters.shared`): roster results, pushes and
probes see every other member as an item with the directory's display name, the group as roster
group and subscription "both"; presence goes to the online members only, found through the
Tracker. A user's version tag hashes the memberships and names of the user's groups, so a change
in the directory changes the roster version; changes are pushed to online members (up to
`PUSH_LIMIT` items each, beyond that the changed version makes the next fetch a full one).

Personal items beside them work as before; for the same contact the merge rule is
`roster.merge` (personal name wins, groups are joined, subscription "both"). Removing a
directory contact or ending the subscription with one gets <not-allowed/>.

Earlier versions wrote the items into every member's stored roster and remembered them in the
keyval store "directory_roster": `migrate` puts those stored items back as they were before the
directory (or removes them) once, after the first read.

`host.services["directory"]` offers `is_admin(bare)` (the role service's answer, xmppd/roles.py:
server.admins or the LDAP admin group), `display_name(local)`, `user_for_mail(address)` (the
LDAP `mail` attribute, from the last read) and `request_refresh()`. The snapshot also holds the
members of the admin and limited groups, which `xmppd/roles.py` reads.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, copy, first_child, make, qname, reply, sub
from ..ratelimit import TokenBucket
from ..roles import roles_of
from ..router import StanzaEvent
from ..storage import StorageError
from .directory_groups import Snapshot
from .roster import Doc, RosterError, blank

if TYPE_CHECKING:
    from auth.ldap import DirectoryUser, Group, LdapAuth

    from ..session import Session

OLD_STORE = "directory_roster"  # per-pair items of earlier versions, migrated away
READY_WAIT = 10.0  # seconds a first roster request waits for the first directory read
PUSH_LIMIT = 200  # changed items pushed to one online user per refresh; beyond: next fetch
ON_DEMAND_GAP = 10.0  # seconds between refreshes asked for on demand


def ldap_of(auth: Any) -> LdapAuth | None:
    from auth.ldap import LdapAuth

    if isinstance(auth, LdapAuth):
        return auth
    inner = getattr(auth, "ldap", None)
    return inner if isinstance(inner, LdapAuth) else None


class Directory:
    """The "directory" service of one host, the roster's shared source, and the refresh loop."""

    def __init__(self, module: Module, ldap: LdapAuth | None) -> None:
        self.module = module
        self.host = module.host
        self.ldap = ldap
        self.domain = module.host.domain
        self.suffix = "@" + self.domain
        self.old_store = module.open_keyval(OLD_STORE)
        self.snapshot: Snapshot | None = None
        self.ready = trio.Event()
        self.wake = trio.Event()
        self.on_demand = TokenBucket(1 / ON_DEMAND_GAP, 1, 0.0)
        self.started = False
        self.warned: dict[str, int] = {}  # oversized groups already logged, with their size

    # ---- service API ------------------------------------------------------------------------

    def is_admin(self, bare: str) -> bool:
        """Admin rights: listed in server.admins or a member of [auth.ldap] admin_group."""
        return roles_of(self.host).is_admin(bare)

    def display_name(self, local: str) -> str | None:
        return self.snapshot.names.get(local) if self.snapshot is not None else None

    def is_managed(self, user: str, contact: str) -> bool:
        return self.item(user, contact) is not None

    def user_for_mail(self, address: str) -> str | None:
        """The username whose LDAP `mail` is `address` (from the last read; no search)."""
        return self.snapshot.mails.get(address.lower()) if self.snapshot is not None else None

    def request_refresh(self) -> bool:
        """Read the directory soon (at most once per ON_DEMAND_GAP); False when refused."""
        if self.ldap is None or not self.on_demand.allow(trio.current_time()):
            return False
        self.wake.set()
        return True

    # ---- the roster's shared source (roster.Shared) ------------------------------------------

    def _local(self, bare: str) -> str | None:
        local, _, domain = bare.partition("@")
        return local if domain == self.domain else None

    def tag(self, user: str) -> str:
        local = self._local(user)
        return self.snapshot.tag(local) if self.snapshot and local else ""

    def items(self, user: str) -> Iterator[tuple[str, str | None, list[str]]]:
        snap, local = self.snapshot, self._local(user)
        if snap is None or local is None:
            return
        groups = snap.member_of.get(local, ())
        if len(groups) == 1:  # the common case: no merging of groups needed
            names, group = snap.names, [groups[0]]
            for member in snap.groups[groups[0]]:
                if member != local:
                    yield member + self.suffix, names.get(member) or None, group
            return
        for member in snap.members_seen_by(local):
            item = snap.item(local, member)
            if item is not None:
                yield member + self.suffix, item[0], item[1]

    def render(self, user: str, skip: set[str]) -> bytes:
        snap, local = self.snapshot, self._local(user)
        if snap is None or local is None:
            return b""
        locals_ = {c[: -len(self.suffix)] for c in skip if c.endswith(self.suffix)}
        return snap.render(local, locals_, self.suffix)

    def item(self, user: str, contact: str) -> tuple[str | None, list[str]] | None:
        snap, local, other = self.snapshot, self._local(user), self._local(contact)
        if snap is None or local is None or other is None:
            return None
        return snap.item(local, other)

    def online_contacts(self, user: str) -> list[str]:
        """Online members of the user's groups: the smaller of (online accounts, members) is
        walked, so one login in a 20,000-member group with 200 online costs ~200 checks."""
        snap, local = self.snapshot, self._local(user)
        if snap is None or local is None or local not in snap.member_of:
            return []
        tracker, topic = self.host.tracker, self.host.presence_topic
        online = tracker.keys(topic)
        members = snap.members_seen_by(local)
        n = len(self.suffix)
        if len(online) < len(members):
            found = [b for b in online if b.endswith(self.suffix) and b[:-n] in members]
        else:
            found = [m + self.suffix for m in members if m + self.suffix in online]
        return [b for b in found if b != user and tracker.get_by_key(topic, b)]

    # ---- refresh ----------------------------------------------------------------------------

    def start(self, session: Session) -> None:
        """Hosts have no nursery of their own: the loop starts with the first login."""
        if self.started or self.ldap is None:
            return
        self.started = True
        session.server.nursery_soon(self.refresh_forever)

    async def refresh_forever(self) -> None:
        assert self.ldap is not None
        migrated = False
        while True:
            try:
                await self.refresh()
                if not migrated and self.snapshot is not None:
                    await self.migrate()  # before the first roster answer, if it is quick
                    migrated = True
            except Exception:  # the next round tries again; logins do not depend on this
                self.module.log.exception("directory refresh failed")
            finally:
                self.ready.set()
            with trio.move_on_after(self.ldap.s["refresh_interval"]):
                await self.wake.wait()
            self.wake = trio.Event()

    async def read(self) -> Snapshot:
        """Users, groups and admins from the directory (in a worker thread)."""
        ldap = self.ldap
        assert ldap is not None
        d, s = ldap.directory, ldap.s

        def work(conn: Any) -> tuple[list[DirectoryUser], list[Group], list[str], list[str]]:
            users = d.list_users(conn)
            groups = d.list_groups(conn, users)
            admins = d.read_group(conn, s["admin_group"], users).members if s["admin_group"] else []
            limited = s["limited_group"] and d.read_group(conn, s["limited_group"], users).members
            return users, groups, admins, limited or []

        users, groups, admins, limited = await ldap.run(d.with_service, work)
        ldap.known = {u.username for u in users}
        names = {u.username: u.display_name(s["display_name_attribute"]) or "" for u in users}
        members: dict[str, set[str]] = {}
        sizes = {}
        for group in groups:
            sizes[group.name] = len(group.members)
            if self.too_big(group):
                continue
            members.setdefault(group.name, set()).update(group.members)
        snapshot = Snapshot.build(names, members, set(admins))
        snapshot.limited = set(limited)
        snapshot.sizes = sizes
        snapshot.mails = {m.lower(): u.username for u in users if (m := u.text("mail"))}
        return snapshot

    def too_big(self, group: Group) -> bool:
        """Only when an admin set `max_group_size`: by default groups of any size are shown."""
        limit = self.ldap.s["max_group_size"] if self.ldap is not None else 0
        if not limit or len(group.members) <= limit:
            return False
        if self.warned.get(group.name) != len(group.members):  # once per size
            self.warned[group.name] = len(group.members)
            self.module.log.warning(
                "group %r has %d members (max_group_size %d): not a roster group",
                group.name,
                len(group.members),
                limit,
            )
        return True

    async def refresh(self) -> None:
        try:
            snapshot = await self.read()
        except Exception as exc:  # DirectoryUnavailable: keep the last state
            self.module.log.warning("directory contacts not refreshed: %s", exc)
            return
        old, self.snapshot = self.snapshot, snapshot
        if old is not None:
            snapshot.keep_rendered(old)
        # The first read too: users whose roster or presence did not wait for it get it now.
        await self.announce(old or Snapshot(), snapshot)

    async def announce(self, old: Snapshot, new: Snapshot) -> None:
        """Push what changed to the online members concerned, and exchange presence."""
        changed: dict[str, set[str]] = {}  # group -> members added, removed or renamed
        for group in set(old.groups) | set(new.groups):
            if old.digests.get(group) == new.digests.get(group):
                continue
            before, after = old.groups.get(group, frozenset()), new.groups.get(group, frozenset())
            renamed = {m for m in before & after if old.names.get(m) != new.names.get(m)}
            changed[group] = (before ^ after) | renamed
        if not changed:
            return
        rosters = self.host.services["roster"]
        presence = self.host.services.get("presence")
        online = self.online_users()
        if not online:
            return
        online_locals = {b[: -len(self.suffix)] for b in online}
        for user in online:
            local = user[: -len(self.suffix)]
            contacts = self.changed_for(local, old, new, changed)
            # Past the limit no pushes: the version changed, the next fetch brings everything;
            # presence is still exchanged with the online ones.
            push = len(contacts) <= PUSH_LIMIT
            if not push:
                contacts = online_locals & contacts
            for contact in sorted(contacts):
                if push:
                    try:
                        await rosters.push_shared(user, contact + self.suffix)
                    except StorageError:
                        self.module.log.exception("cannot push a directory change to %s", user)
                if presence is not None:
                    await self.exchange(presence, user, contact, old, new)

    def online_users(self) -> list[str]:
        return [b for b in list(self.host.sessions) if b.endswith(self.suffix)]

    @staticmethod
    def changed_for(
        local: str, old: Snapshot, new: Snapshot, changed: dict[str, set[str]]
    ) -> set[str]:
        """Contacts whose shared item changed for `local`."""
        contacts: set[str] = set()
        for snap, other in ((old, new), (new, old)):
            for group in snap.member_of.get(local, ()):
                if group not in changed:
                    continue
                if local in changed[group]:  # joined or left: everyone in it changed
                    contacts |= snap.groups[group] | other.groups.get(group, frozenset())
                else:
                    contacts |= changed[group]
        contacts.discard(local)
        return contacts

    async def exchange(
        self, presence: Any, user: str, contact: str, old: Snapshot, new: Snapshot
    ) -> None:
        """A new directory contact's presence shows at once; a removed one's goes dark."""
        bare = contact + self.suffix
        if not presence.available(bare):
            return  # offline: nothing to show or to hide
        local = user[: -len(self.suffix)]
        was, now = old.item(local, contact), new.item(local, contact)
        if (was is None) == (now is None):
            return
        if now is not None:
            await presence.send_current(bare, user)
        else:
            doc = await self.host.services["roster"].peek(user, bare)
            if doc is None or not doc["listed"] or doc["sub"] not in ("to", "both"):
                await presence.send_unavailable(bare, user)

    async def migrate(self) -> None:
        """Put back the per-pair items earlier versions stored (once; a no-op afterwards)."""
        users = await self.old_store.users()
        if not users:
            return
        rosters, count = self.host.services["roster"], 0
        for local in users:
            record = await self.old_store.get(local) or {"items": {}}
            user = local + self.suffix
            for contact, managed in record["items"].items():
                prior = managed.get("prior")
                try:
                    await rosters.apply(user, contact, lambda d, p=prior: _restored(d, p))
                    count += 1
                except (RosterError, StorageError) as exc:
                    self.module.log.warning("cannot migrate %s for %s: %s", contact, user, exc)
            await self.old_store.set(local, None)
        self.module.log.info(
            "directory contacts: %d stored items of %d accounts from the old per-pair rows "
            "replaced by virtual groups",
            count,
            len(users),
        )


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
    host.services["roster"].shared = directory

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
        snap = directory.snapshot
        if snap is not None and session.jid is not None and session.jid.local not in snap.names:
            directory.request_refresh()  # new in the directory: its groups should show
        return False

    async def wait_ready(event: StanzaEvent) -> bool:
        if event.origin is not None and not directory.ready.is_set():
            directory.start(event.origin)
            with trio.move_on_after(READY_WAIT):
                await directory.ready.wait()
        return False  # the roster and presence modules answer

    async def roster_set(event: StanzaEvent) -> bool:
        """A personal name or groups for a directory contact are fine (merged); removing it
        would not remove it from the group, so it is refused."""
        session, query = event.origin, first_child(event.stanza)
        if session is None or query is None:
            return False
        for item in query.iterchildren(qname(ns.ROSTER, "item")):
            try:
                contact = str(JID.parse(item.get("jid") or "").bare)
            except JIDError:
                return False  # the roster module answers with the right error
            removing = item.get("subscription") == "remove"
            if removing and directory.is_managed(session.bare, contact):
                return await event.reply_error(
                    "not-allowed", "this contact comes from the directory and cannot be removed"
                )
        return False

    async def subscription(event: StanzaEvent) -> bool:
        """Directory contacts are subscribed both ways already: a request is approved at once
        (RFC 6121 §3.1.3, as for an existing subscription) and an approval needs nothing;
        ending the subscription would silently break the group for both, so it is refused."""
        session, to, type_ = event.origin, event.to, event.stanza.get("type")
        if type_ not in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            return False
        if session is None or to is None or not directory.is_managed(session.bare, str(to.bare)):
            return False
        if type_ == "subscribe":
            # Straight to the user's resources: the user's own server has no pending request
            # stored (none is needed) and would drop a routed answer.
            answer = make("presence", {"type": "subscribed", "from": str(to.bare)})
            for full in list(host.resources_of(session.bare)):
                answer.set("to", f"{session.bare}/{full}")
                host.deliver_to_full(answer.get("to"), copy(answer))
            return True
        if type_ == "subscribed":
            return True
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
    module.hook("pre-presence/bare", subscription, 1)
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
