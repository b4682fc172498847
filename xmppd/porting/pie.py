"""XEP-0227 files: reading (with the XInclude the spec requires, §5) and writing.

Reading yields `(host jid, <user/> element)` pairs. Accepted namespaces: `urn:xmpp:pie:0`
(since version 1.0; what Prosody and ejabberd write) and the older pre-Draft one. A directory
is read as every `*.xml` in it, sorted (prosody-migrator's xep0227 store writes one
`user@host.xml` file per account, each a complete `<server-data/>`).

XInclude (§5): an importing server MUST follow `<include/>` with a relative `href`, no `parse`
and no `xpointer`. We follow exactly those, and only to files inside the directory of the file
read first: an export is data, and must not read /etc/shadow for us.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from urllib.parse import urlparse

from lxml import etree

from auth.scram import HASHES, ScramCredentials

from ..protocol.stanza import Element, local_name, namespace_of

PIE = "urn:xmpp:pie:0"
PIE_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns"
PIE_SCRAM = "urn:xmpp:pie:0#scram"  # XEP-0227 1.1 §4.3.1
XINCLUDE = "http://www.w3.org/2001/XInclude"
# Our own extension attributes (XEP-0227 allows foreign-namespace content).
XMPPD = "urn:xmppd:pie:0"
_PIE_NAMESPACES = (PIE, PIE_OLD)
_MAX_INCLUDE_DEPTH = 8
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_comments=True, huge_tree=True
)


class PieError(Exception):
    """The file is not a usable XEP-0227 document."""


# ---- reading ------------------------------------------------------------------------------------


def read(path: Path) -> list[tuple[str, Element]]:
    """(host jid, <user/>) for every user in the file, or in every *.xml of the directory."""
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise PieError(f"{path}: no *.xml files")
    users: list[tuple[str, Element]] = []
    for file in files:
        root = _load(file, file.parent.resolve(), 0)
        users += _users(root, file)
    return users


def _load(file: Path, base: Path, depth: int) -> Element:
    try:
        root = etree.parse(str(file), _PARSER).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise PieError(f"{file}: {exc}") from exc
    _expand(root, file.parent, base, depth)
    return root


def _expand(root: Element, here: Path, base: Path, depth: int) -> None:
    """Replace each xi:include by the root of the file it names."""
    for inc in list(root.iter(f"{{{XINCLUDE}}}include")):
        href = inc.get("href", "")
        if inc.get("parse", "xml") != "xml" or inc.get("xpointer") is not None:
            raise PieError(f"unsupported XInclude (parse/xpointer): {href!r}")
        if not href or urlparse(href).scheme or href.startswith("/"):
            raise PieError(f"XInclude href must be a relative file name: {href!r}")
        target = (here / href).resolve()
        if base not in target.parents:
            raise PieError(f"XInclude {href!r} leaves the export's directory")
        if depth >= _MAX_INCLUDE_DEPTH:
            raise PieError(f"XInclude nested deeper than {_MAX_INCLUDE_DEPTH}")
        included = _load(target, base, depth + 1)
        parent = inc.getparent()
        if parent is None:
            raise PieError("an XInclude cannot be the document itself")
        included.tail = inc.tail
        parent.replace(inc, included)


def _users(root: Element, file: Path) -> list[tuple[str, Element]]:
    if namespace_of(root) not in _PIE_NAMESPACES or local_name(root) not in ("server-data", "host"):
        raise PieError(f"{file}: the root is {root.tag}, not XEP-0227 <server-data/>")
    hosts = [root] if local_name(root) == "host" else [h for h in root if _is_pie(h, "host")]
    users = []
    for host in hosts:
        jid = host.get("jid")
        if not jid:
            raise PieError(f"{file}: <host/> without 'jid'")
        for user in host:
            # A nameless <user/> holds no account (Prosody writes host-wide data that way).
            if _is_pie(user, "user") and user.get("name"):
                users.append((jid, user))
    return users


def _is_pie(el: object, name: str) -> bool:
    return (
        isinstance(el, etree._Element)
        and isinstance(el.tag, str)
        and namespace_of(el) in _PIE_NAMESPACES
        and local_name(el) == name
    )


# ---- credentials --------------------------------------------------------------------------------


def scram_credentials(user: Element) -> dict[str, ScramCredentials]:
    """Hash name ("SHA-1"...) -> keys, from <scram-credentials/> (XEP-0227 1.1) and from the
    'password' attribute ejabberd writes for SCRAM accounts ("scram:StoredKey,ServerKey,Salt,
    IterationCount", base64, SCRAM-SHA-1)."""
    found: dict[str, ScramCredentials] = {}
    for el in user.iterchildren(f"{{{PIE_SCRAM}}}scram-credentials"):
        mechanism = el.get("mechanism", "")
        hash_name = mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
        if not mechanism.startswith("SCRAM-") or hash_name not in HASHES:
            raise PieError(f"user {user.get('name')!r}: unsupported mechanism {mechanism!r}")
        found[hash_name] = ScramCredentials(
            salt=_b64(el, "salt"),
            iterations=_int(el, "iter-count"),
            stored_key=_b64(el, "stored-key"),
            server_key=_b64(el, "server-key"),
        )
    password = user.get("password") or ""
    if password.startswith("scram:") and "SHA-1" not in found:
        fields = password.removeprefix("scram:").split(",")
        if len(fields) != 4:
            raise PieError(f"user {user.get('name')!r}: malformed ejabberd SCRAM password")
        stored, server, salt, iterations = fields
        found["SHA-1"] = ScramCredentials(
            salt=_decode(salt), iterations=_count(iterations),
            stored_key=_decode(stored), server_key=_decode(server),
        )  # fmt: skip
    return found


def plain_password(user: Element) -> str | None:
    password = user.get("password")
    return password if password and not password.startswith("scram:") else None


def _text(el: Element, name: str) -> str:
    child = el.find(f"{{{PIE_SCRAM}}}{name}")
    if child is None or not (child.text or "").strip():
        raise PieError(f"<scram-credentials/> without <{name}/>")
    return child.text.strip()


def _b64(el: Element, name: str) -> bytes:
    return _decode(_text(el, name))


def _int(el: Element, name: str) -> int:
    return _count(_text(el, name))


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PieError(f"not base64: {text!r}") from exc


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise PieError(f"bad SCRAM iteration count {text!r}")
    return int(text)


def scram_element(hash_name: str, creds: ScramCredentials) -> Element:
    el = etree.Element(f"{{{PIE_SCRAM}}}scram-credentials", nsmap={None: PIE_SCRAM})
    el.set("mechanism", f"SCRAM-{hash_name}")
    for name, value in (
        ("server-key", base64.b64encode(creds.server_key).decode()),
        ("stored-key", base64.b64encode(creds.stored_key).decode()),
        ("iter-count", str(creds.iterations)),
        ("salt", base64.b64encode(creds.salt).decode()),
    ):
        etree.SubElement(el, f"{{{PIE_SCRAM}}}{name}").text = value
    return el


# ---- writing ------------------------------------------------------------------------------------


def new_document() -> Element:
    return etree.Element(f"{{{PIE}}}server-data", nsmap={None: PIE})


def add_host(root: Element, jid: str) -> Element:
    return etree.SubElement(root, f"{{{PIE}}}host", jid=jid)


def add_user(host: Element, name: str) -> Element:
    return etree.SubElement(host, f"{{{PIE}}}user", name=name)


def write(path: Path, root: Element) -> None:
    """Readable by the owner only (§8: the file holds credentials), durable on return."""
    etree.cleanup_namespaces(root)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
