"""Directory groups as data (sans-IO): one read of the directory, and roster items rendered from it.

A `Snapshot` holds each group's members once and each user's groups, so a group costs memory
in proportion to its members, not to pairs of them. Roster items are computed on request. For
the full roster get of a big group, building ~20,000 elements one by one is slow in lxml, so a
group's items are rendered once per snapshot into one byte string (`Rendered`), sorted by
member, with the offsets of each item: a member's roster is that string with its own item (and
the items it has personally, merged elsewhere) cut out, parsed once.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

# Characters XML 1.0 does not allow: a display name holding one must not break a roster.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def item_xml(jid: str, name: str | None, groups: list[str]) -> bytes:
    """A roster <item/> (in the roster namespace by inheritance), subscription both."""
    named = f" name={quoteattr(name)}" if name else ""
    inner = "".join(f"<group>{escape(g)}</group>" for g in groups)
    return f"<item jid={quoteattr(jid)} subscription='both'{named}>{inner}</item>".encode()


@dataclass(slots=True)
class Rendered:
    """A group's items as XML, ordered by member, with where each one starts and ends."""

    order: list[str]  # members, sorted
    offsets: array  # len(order) + 1 byte offsets into xml
    xml: bytes

    def span(self, member: str) -> tuple[int, int] | None:
        i = bisect_left(self.order, member)
        if i < len(self.order) and self.order[i] == member:
            return self.offsets[i], self.offsets[i + 1]
        return None

    def without(self, members: set[str]) -> list[bytes]:
        """The xml in pieces, with the items of `members` left out."""
        cuts = sorted(s for s in (self.span(m) for m in members) if s is not None)
        pieces, pos = [], 0
        for start, end in cuts:
            pieces.append(self.xml[pos:start])
            pos = end
        pieces.append(self.xml[pos:])
        return pieces


@dataclass(slots=True)
class Snapshot:
    """One read of the directory: each group's members once, and each user's groups."""

    names: dict[str, str] = field(default_factory=dict)  # username -> display name
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # group -> usernames
    member_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # username -> groups
    digests: dict[str, str] = field(default_factory=dict)  # group -> hash of members and names
    admins: set[str] = field(default_factory=set)
    limited: set[str] = field(default_factory=set)  # members of [auth.ldap] limited_group
    sizes: dict[str, int] = field(default_factory=dict)  # every group read, by name
    tags: dict[str, str] = field(default_factory=dict)  # username -> version tag (lazy)
    rendered: dict[str, Rendered] = field(default_factory=dict)  # group -> items (lazy)
    mails: dict[str, str] = field(default_factory=dict)  # mail address (lowercase) -> username

    @classmethod
    def build(
        cls, names: dict[str, str], groups: dict[str, set[str]], admins: set[str]
    ) -> Snapshot:
        snap = cls(names={u: clean(n) for u, n in names.items()}, admins=admins)
        member_of: dict[str, list[str]] = {}
        for group in sorted(groups):
            members = frozenset(groups[group])
            snap.groups[group] = members
            text = "\n".join(f"{m}\t{snap.names.get(m, '')}" for m in sorted(members))
            snap.digests[group] = hashlib.sha256(f"{group}\n{text}".encode()).hexdigest()
            for member in members:
                member_of.setdefault(member, []).append(group)
        snap.member_of = {m: tuple(g) for m, g in member_of.items()}
        return snap

    def keep_rendered(self, old: Snapshot) -> None:
        """Groups unchanged since `old` keep their rendering."""
        for group, rendered in old.rendered.items():
            if self.digests.get(group) == old.digests.get(group):
                self.rendered[group] = rendered

    def tag(self, user: str) -> str:
        """Changes when a group of the user gains or loses members or a member's name."""
        groups = self.member_of.get(user)
        if not groups:
            return ""
        tag = self.tags.get(user)
        if tag is None:
            text = "\n".join(self.digests[g] for g in groups)
            tag = self.tags[user] = hashlib.sha256(text.encode()).hexdigest()[:12]
        return tag

    def item(self, user: str, contact: str) -> tuple[str | None, list[str]] | None:
        if user == contact:
            return None
        groups = [g for g in self.member_of.get(user, ()) if contact in self.groups[g]]
        return (self.names.get(contact) or None, groups) if groups else None

    def members_seen_by(self, user: str) -> frozenset[str] | set[str]:
        groups = self.member_of.get(user, ())
        if len(groups) == 1:
            return self.groups[groups[0]]
        return set().union(*(self.groups[g] for g in groups))

    def render_group(self, group: str, suffix: str) -> Rendered:
        rendered = self.rendered.get(group)
        if rendered is None:
            order = sorted(self.groups[group])
            offsets, parts, pos = array("I", [0]), [], 0
            for member in order:
                part = item_xml(member + suffix, self.names.get(member) or None, [group])
                parts.append(part)
                pos += len(part)
                offsets.append(pos)
            rendered = self.rendered[group] = Rendered(order, offsets, b"".join(parts))
        return rendered

    def render(self, user: str, skip: set[str], suffix: str) -> bytes:
        """Every shared item of `user` as XML, but those of `skip` (usernames)."""
        groups = self.member_of.get(user, ())
        if not groups:
            return b""
        # A contact in several of the user's groups gets one item with all of them.
        biggest = max(groups, key=lambda g: len(self.groups[g]))
        others = [self.groups[g] for g in groups if g != biggest]
        multi: set[str] = set()
        if others:
            counts: dict[str, int] = {}
            for members in others:
                for m in members:
                    counts[m] = counts.get(m, 1 if m in self.groups[biggest] else 0) + 1
            multi = {m for m, n in counts.items() if n > 1}
        cut = multi | skip | {user}
        pieces: list[bytes] = []
        for group in groups:
            pieces += self.render_group(group, suffix).without(cut)
        for contact in sorted(multi - skip - {user}):
            item = self.item(user, contact)
            if item is not None:
                pieces.append(item_xml(contact + suffix, item[0], item[1]))
        return b"".join(pieces)
