"""Files on the JSON channels (docs/channels.md, "Files").

Upload slots come from the upload module's service (modules/upload.py), the one place their
rules live, so a web client gets exactly the limits, quotas and refusals an XMPP client gets
with XEP-0363. A message that shares a file is what Conversations and Gajim send: the URL as
the body plus XEP-0066 out-of-band data `<x xmlns="jabber:x:oob"><url/></x>`. Going out, a
`file` in a `new_msg` becomes that; coming in, such a message (or one whose body is exactly a
URL of our upload service, as some clients send) gets a `file` object: url, name, type, and
the size when the file is ours.
"""

from __future__ import annotations

import mimetypes
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..modules.upload import SlotRefused, UploadService
from ..protocol import namespaces as ns
from ..protocol.jid import JID
from ..protocol.stanza import Element, child_text, get_child, sub
from .session import ChannelError

if TYPE_CHECKING:
    from .session import ChannelSession
    from .user import UserTopic

MAX_URL = 2048
# An absolute http(s) URL without spaces or controls: never a javascript: or data: link.
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]{1,2040}", re.IGNORECASE)


def uploads(session: ChannelSession) -> UploadService | None:
    service = session.host.services.get("upload")
    return service if isinstance(service, UploadService) else None


def join_info(session: ChannelSession) -> dict[str, Any]:
    """What the user join reply says of uploads: the size limit, and the URL prefix of the
    files this server keeps (a client previews those; others are links)."""
    service = uploads(session)
    if service is None or service.root is None:
        return {}
    limit = service.options["max_file_size"]
    return {"upload": {"max_file_size": limit, "url": f"{service.base_url}/{service.domain}/"}}


# ---- requests ---------------------------------------------------------------------------------


async def upload_slot(user: UserTopic, p: dict[str, Any]) -> dict[str, Any]:
    """`upload_slot` {filename, size, content_type?}: the XEP-0363 slot as JSON."""
    service = uploads(user.session)
    if service is None:
        raise ChannelError("service-unavailable", "file upload is off on this server")
    filename = p.get("filename")
    if not isinstance(filename, str) or not filename or len(filename) > 1024:
        raise ChannelError("bad-request", "filename must be a string of 1 to 1024 characters")
    content_type = p.get("content_type") or ""
    if not isinstance(content_type, str):
        raise ChannelError("bad-request", "content_type is a MIME type")
    owner = JID.parse(user.session.bare).local or ""
    try:
        slot = await service.grant(owner, filename, p.get("size"), content_type)
    except SlotRefused as exc:
        details: dict[str, Any] = {}
        if exc.max_file_size is not None:
            details["max_file_size"] = exc.max_file_size
        if exc.retry is not None:
            details["retry"] = int(exc.retry)
        raise ChannelError(exc.condition, exc.text, **details) from None
    put, get = service.urls(slot)
    headers = {"Content-Type": slot.type} if slot.type else {}
    return {"put": put, "get": get, "headers": headers, "name": slot.name, "size": slot.size}


REQUESTS = {"upload_slot": upload_slot}


# ---- messages out -----------------------------------------------------------------------------


def file_arg(p: dict[str, Any]) -> str | None:
    """The URL of a `file` in a message payload (None without one); its body, when given,
    must be that URL, which is what XMPP clients show and open."""
    shared = p.get("file")
    if shared is None:
        return None
    url = shared.get("url") if isinstance(shared, dict) else None
    if not isinstance(url, str) or not _URL.fullmatch(url):
        raise ChannelError("bad-request", "file is {url} with an http or https URL")
    if p.get("body") not in (None, url):
        raise ChannelError("bad-request", "the body of a file message is its URL")
    return url


def add_oob(message: Element, url: str) -> Element:
    x = sub(message, ns.OOB, "x")
    sub(x, ns.OOB, "url", url)
    return message


# ---- messages in ------------------------------------------------------------------------------


def shared_url(stanza: Element, service: UploadService | None) -> str | None:
    x = get_child(stanza, ns.OOB, "x")
    url = child_text(x, ns.OOB, "url") if x is not None else None
    if url is None and service is not None:
        body = child_text(stanza, ns.CLIENT, "body")
        if body is not None and service.slot_id_of(body) is not None:
            url = body
    url = url.strip() if url else None
    return url if url and _URL.fullmatch(url) else None


def annotate(out: dict[str, Any] | None, stanza: Element, session: ChannelSession) -> None:
    """Add `file` to a rendered message that shares one."""
    if out is None or "body" not in out or out.get("retracted"):
        return
    service = uploads(session)
    url = shared_url(stanza, service)
    if url is None:
        return
    known = service.known(url) if service is not None else None
    name = known.name if known else _name_of(url)
    shared: dict[str, Any] = {"url": url, "name": name}
    kind = (known.type if known else "") or mimetypes.guess_type(name, strict=True)[0]
    if kind:
        shared["type"] = kind
    if known is not None:
        shared["size"] = known.size
    out["file"] = shared


async def complete(messages: list[dict[str, Any]], session: ChannelSession) -> None:
    """Sizes and types of our own files this process does not remember (history, replays)."""
    service = uploads(session)
    if service is None:
        return
    for message in messages:
        shared = message.get("file")
        if shared is None or "size" in shared:
            continue
        info = await service.describe(shared["url"])
        if info is not None:
            shared.update(name=info.name, size=info.size)
            if info.type:
                shared["type"] = info.type


def _name_of(url: str) -> str:
    path = urlsplit(url).path
    name = unquote(path.rstrip("/").rpartition("/")[2])
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "file"
