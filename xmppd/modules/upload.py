"""XEP-0363 HTTP File Upload on `upload.<domain>`: slots here, the bytes on the web listener.

An account asks the service for a slot (filename, size, content type), with a XEP-0363 iq or
over the JSON channels (channels/files.py); both call `UploadService.grant`, where the rules
live. Within the per-file limit and its quotas (bytes stored, bytes requested in the last 24
hours) it gets a PUT URL signed with the installation's secret and a GET URL. The web listener
(transports/upload.py) checks a PUT against the slot (exact size, same content type, unused,
not past its deadline), stores the file in `<data_dir>/upload/<domain>/`, then serves it with
its content type and headers that keep a browser from running it (docs/web.md). A sweeper
deletes expired files and unused slots; a deleted account's files go at once.

Records: key-value store `upload_slots` (slot id -> slot) and map `upload_files` (owner, slot
id -> size and time) for the quotas. The service learns the data directory, secret and URL
when the web listener starts (`attach`); until then slot requests are `service-unavailable`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import trio

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..muc.component import Component
from ..options import ConfigError, Option
from ..protocol import forms
from ..protocol import namespaces as ns
from ..protocol.jid import JIDError, prep_domain
from ..protocol.stanza import Element, element, error_reply, reply, sub
from ..router import DELIVERY, StanzaEvent

if TYPE_CHECKING:
    from ..storage.base import KeyValueStore, MapStore

DAY = 86400
KNOWN_MAX = 4096  # files described from memory (rendered messages); older ones are read
_SLOT_ID = re.compile(r"[A-Za-z0-9_-]{24}")
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]{1,200}")  # it becomes a response header
# Shown inline in a browser; everything else (HTML, SVG, XML, scripts...) is an attachment.
INLINE_TYPES = re.compile(
    r"image/(png|jpeg|gif|webp|avif|bmp)|audio/[\w.+-]+|video/[\w.+-]+|text/plain"
)


class FileInfo(NamedTuple):
    name: str
    type: str  # "" when the uploader named none
    size: int


@dataclass(slots=True)
class Slot:
    id: str
    owner: str  # local part of the uploader
    name: str
    size: int
    type: str  # content type the PUT must carry ("" when the request named none)
    created: float
    put_by: float  # the PUT must arrive before this time
    expires: float  # the file is deleted after this time (0: kept)
    done: bool = False


class UploadRefused(Exception):
    """A PUT or GET the slot does not allow: HTTP status and a reason for the client."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


def clean_filename(name: str) -> str:
    """The last path segment without control characters, at most 200 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name[:200] or "file"


def disposition(content_type: str, name: str) -> str:
    kind = "inline" if INLINE_TYPES.fullmatch(base_type(content_type)) else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(name, safe='')}"


def valid_type(content_type: str) -> bool:
    """`type/subtype` with parameters that are safe in a response header."""
    return bool(_MIME.fullmatch(base_type(content_type)) and _HEADER_SAFE.fullmatch(content_type))


def base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class UploadService:
    def __init__(self, module: Module, domain: str) -> None:
        self.module = module
        self.domain = domain
        self.options = module.options
        self.slots: KeyValueStore = module.open_keyval("upload_slots")
        self.files: MapStore = module.open_map("upload_files")
        self.root: Path | None = None
        self.base_url = ""
        self._secret = b""
        self._busy: set[str] = set()  # slots with a PUT under way
        self._known: dict[str, FileInfo] = {}  # slot id -> file, the latest KNOWN_MAX

    # ---- set-up -------------------------------------------------------------------------------

    def attach(self, root: Path, secret: bytes, base_url: str) -> None:
        """Called by the web listener once it knows where it listens."""
        root.mkdir(parents=True, exist_ok=True)
        self.root, self._secret = root, secret
        self.base_url = (self.options["url"] or base_url).rstrip("/")

    async def sweep_forever(self) -> None:
        while True:
            await trio.sleep(self.options["cleanup_interval"])
            try:
                await self.sweep()
            except Exception:
                self.module.log.exception("upload clean-up failed; trying again later")

    async def sweep(self, now: float | None = None) -> int:
        """Delete expired files and slots never used; returns how many went."""
        now = time.time() if now is None else now
        gone = 0
        for slot_id in await self.slots.users():
            slot = await self.get(slot_id)
            if slot is None:
                continue
            if (slot.done and slot.expires and slot.expires < now) or (
                not slot.done and slot.put_by < now and slot_id not in self._busy
            ):
                await self.delete(slot)
                gone += 1
        return gone

    # ---- records ------------------------------------------------------------------------------

    async def get(self, slot_id: str) -> Slot | None:
        doc = await self.slots.get(slot_id)
        return Slot(**doc) if doc else None

    async def delete(self, slot: Slot) -> None:
        if self.root is not None:
            self.path(slot.id).unlink(missing_ok=True)
            self.part_path(slot.id).unlink(missing_ok=True)
        await self.slots.set(slot.id, None)
        await self.files.set(slot.owner, slot.id, None)
        self._known.pop(slot.id, None)

    def path(self, slot_id: str) -> Path:
        assert self.root is not None
        return self.root / slot_id

    def part_path(self, slot_id: str) -> Path:
        assert self.root is not None
        return self.root / f"{slot_id}.part"

    def token(self, slot_id: str) -> str:
        return hmac.new(self._secret, f"put {slot_id}".encode(), hashlib.sha256).hexdigest()[:40]

    def urls(self, slot: Slot) -> tuple[str, str]:
        get = f"{self.base_url}/{self.domain}/{slot.id}/{quote(slot.name, safe='')}"
        return f"{get}?token={self.token(slot.id)}", get

    # ---- slots: the one place their rules live (XEP-0363 iq and JSON channels alike) --------

    async def usage(self, owner: str, now: float) -> tuple[int, int]:
        """(bytes kept, bytes requested in the last 24 hours) of one account."""
        kept = today = 0
        for doc in (await self.files.get_all(owner)).values():
            if not doc.get("expires") or doc["expires"] > now:
                kept += doc["size"]
            if doc["created"] > now - DAY:
                today += doc["size"]
        return kept, today

    async def grant(self, owner: str, filename: str, size: object, content_type: str) -> Slot:
        """A slot for account `owner` (local part), or SlotRefused saying why not."""
        if self.root is None:
            raise SlotRefused("service-unavailable", "the web listener is off")
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise SlotRefused("bad-request", "size must be a positive integer")
        content_type = content_type.strip()
        if content_type and not valid_type(content_type):
            raise SlotRefused("bad-request", "content-type is not a MIME type")
        max_size = self.options["max_file_size"]
        if size > max_size:
            text = f"files are limited to {max_size} bytes"
            raise SlotRefused("not-acceptable", text, max_file_size=max_size)
        now = time.time()
        kept, today = await self.usage(owner, now)
        quota, daily = self.options["quota"], self.options["daily_quota"]
        if quota and kept + size > quota:
            text = f"your files would exceed your quota of {quota} bytes"
            raise SlotRefused("resource-constraint", text)
        if daily and today + size > daily:
            text = f"you may upload {daily} bytes a day"
            raise SlotRefused("resource-constraint", text, retry=now + DAY)
        expire_after = self.options["expire_after"]
        slot = Slot(
            id=secrets.token_urlsafe(18),
            owner=owner,
            name=clean_filename(filename),
            size=size,
            type=content_type,
            created=now,
            put_by=now + self.options["slot_lifetime"],
            expires=now + expire_after if expire_after else 0,
        )
        await self.slots.set(slot.id, asdict(slot))
        record = {"size": size, "created": now, "expires": slot.expires}
        await self.files.set(owner, slot.id, record)
        self._remember(slot)
        return slot

    # ---- what a shared URL points at (JSON channels render files with name, type, size) -----

    def slot_id_of(self, url: str) -> str | None:
        """The slot of one of this service's GET URLs, else None."""
        prefix = f"{self.base_url}/{self.domain}/"
        if not self.base_url or not url.startswith(prefix):
            return None
        slot_id, _, name = url[len(prefix) :].partition("/")
        if not _SLOT_ID.fullmatch(slot_id) or not name or "/" in name or "?" in name:
            return None
        return slot_id

    def known(self, url: str) -> FileInfo | None:
        """What this process knows of the file at `url` without asking storage."""
        slot_id = self.slot_id_of(url)
        return self._known.get(slot_id) if slot_id is not None else None

    async def describe(self, url: str) -> FileInfo | None:
        """Name, type and size of one of our files (storage asked when not known here)."""
        slot_id = self.slot_id_of(url)
        if slot_id is None:
            return None
        if slot_id not in self._known:
            slot = await self.get(slot_id)
            if slot is None:
                return None
            self._remember(slot)
        return self._known.get(slot_id)

    def _remember(self, slot: Slot) -> None:
        self._known[slot.id] = FileInfo(slot.name, slot.type, slot.size)
        while len(self._known) > KNOWN_MAX:
            del self._known[next(iter(self._known))]

    # ---- the bytes (HTTP side, called by transports/upload.py) -------------------------------

    async def begin_put(
        self, slot_id: str, name: str, token: str, length: str | None, content_type: str
    ) -> Slot:
        """The slot a PUT may fill, marked busy; UploadRefused when it may not."""
        if self.root is None or not _SLOT_ID.fullmatch(slot_id):
            raise UploadRefused(404, "no such upload slot")
        if not hmac.compare_digest(token, self.token(slot_id)):
            raise UploadRefused(403, "this URL does not allow uploading")
        slot = await self.get(slot_id)
        if slot is None or slot.name != name:
            raise UploadRefused(404, "no such upload slot")
        if slot.done or slot_id in self._busy:
            raise UploadRefused(409, "this slot has been used already")
        if slot.put_by < time.time():
            raise UploadRefused(410, "this slot has expired; request a new one")
        if length is None or not length.isdigit() or int(length) != slot.size:
            raise UploadRefused(
                413 if length and length.isdigit() and int(length) > slot.size else 400,
                f"the slot is for exactly {slot.size} bytes (Content-Length)",
            )
        if slot.type and base_type(content_type) != base_type(slot.type):
            raise UploadRefused(415, f"the slot is for Content-Type {slot.type}")
        if not slot.type:
            usable = _MIME.fullmatch(base_type(content_type)) and _HEADER_SAFE.fullmatch(
                content_type
            )
            slot.type = content_type if usable else ""
        self._busy.add(slot_id)
        return slot

    async def finish_put(self, slot: Slot, ok: bool) -> None:
        self._busy.discard(slot.id)
        if not ok:
            self.part_path(slot.id).unlink(missing_ok=True)
            return
        self.part_path(slot.id).rename(self.path(slot.id))
        slot.done = True
        await self.slots.set(slot.id, asdict(slot))
        self._remember(slot)  # the type may come with the PUT

    async def lookup(self, slot_id: str, name: str) -> Slot:
        """The stored file a GET asks for; UploadRefused(404) when there is none (any more)."""
        slot = await self.get(slot_id) if _SLOT_ID.fullmatch(slot_id) else None
        if self.root is None or slot is None or not slot.done or slot.name != name:
            raise UploadRefused(404, "not found")
        if slot.expires and slot.expires < time.time():
            raise UploadRefused(404, "not found")
        return slot

    async def account_deleted(self, event: AccountDeleted) -> bool:
        """The account's files go now; in maintenance mode (no web listener, so no folder
        known) they are marked expired and the running server's next sweep deletes them."""
        now = time.time()
        for slot_id in await self.files.get_all(event.local):
            slot = await self.get(slot_id)
            if slot is None:
                continue
            if self.root is not None:
                await self.delete(slot)
            else:
                slot.expires = slot.put_by = now
                await self.slots.set(slot.id, asdict(slot))
        await self.files.delete_user(event.local)
        return False


class SlotRefused(Exception):
    """A slot request refused: a stanza error condition and words; `max_file_size` with
    not-acceptable (the file is too large), `retry` (a time) when a daily quota is spent."""

    def __init__(
        self,
        condition: str,
        text: str,
        *,
        max_file_size: int | None = None,
        retry: float | None = None,
    ) -> None:
        super().__init__(condition, text)
        self.condition, self.text = condition, text
        self.max_file_size, self.retry = max_file_size, retry


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def refusal(request: Element, exc: SlotRefused) -> Element:
    """The XEP-0363 §4 error for a refused slot, with its application condition."""
    detail = None
    if exc.max_file_size is not None:
        detail = element(ns.HTTP_UPLOAD, "file-too-large")
        sub(detail, ns.HTTP_UPLOAD, "max-file-size", str(exc.max_file_size))
    elif exc.retry is not None:
        detail = element(ns.HTTP_UPLOAD, "retry", stamp=_stamp(exc.retry))
    return error_reply(request, exc.condition, exc.text, app_condition=detail)


def load(module: Module) -> None:
    host = module.host
    domain = module.options["domain"] or f"upload.{host.domain}"
    try:
        domain = prep_domain(domain)
    except JIDError as exc:
        raise ConfigError(f"not a valid domain: {exc}", "modules.upload.domain") from None
    component = Component(domain, host)
    try:
        component.register()
    except ValueError as exc:
        raise ConfigError(str(exc), "modules.upload.domain") from None
    service = UploadService(module, domain)
    host.services["upload"] = service
    host.disco_items[domain] = module.options["name"]
    max_size = module.options["max_file_size"]
    identities = {("store", "file", module.options["name"])}
    features = {ns.HTTP_UPLOAD, ns.DISCO_INFO, ns.DISCO_ITEMS}

    def info(event: StanzaEvent) -> Any:
        result = reply(event.stanza)
        query = sub(result, ns.DISCO_INFO, "query")
        for category, type_, name in sorted(identities):
            sub(query, ns.DISCO_INFO, "identity", category=category, type=type_, name=name)
        for var in sorted(features):
            sub(query, ns.DISCO_INFO, "feature", var=var)
        size_field = forms.Field("max-file-size", values=[str(max_size)])
        query.append(forms.build(ns.HTTP_UPLOAD, [size_field], kind="result"))
        return result

    async def slot(event: StanzaEvent) -> bool:
        request = event.stanza[0]
        sender = event.sender
        if sender is None or sender.domain != host.domain or not sender.local:
            return await event.reply_error("not-allowed", "only accounts of this server upload")
        try:
            new = await service.grant(
                sender.local,
                request.get("filename", ""),
                request.get("size", ""),
                request.get("content-type", ""),
            )
        except SlotRefused as exc:
            return await event.reply(refusal(event.stanza, exc))
        put_url, get_url = service.urls(new)
        result = reply(event.stanza)
        slot_el = sub(result, ns.HTTP_UPLOAD, "slot")
        sub(slot_el, ns.HTTP_UPLOAD, "put", url=put_url)
        sub(slot_el, ns.HTTP_UPLOAD, "get", url=get_url)
        module.log.info("upload slot %s for %s: %d bytes", new.id, sender.bare, new.size)
        return await event.reply(result)

    async def on_iq(event: StanzaEvent) -> bool:
        stanza = event.stanza
        type_ = stanza.get("type")
        if type_ in ("result", "error"):
            return True
        child = stanza[0] if len(stanza) else None
        tag = child.tag if child is not None else ""
        if type_ == "get" and tag == f"{{{ns.DISCO_INFO}}}query":
            if child is not None and child.get("node"):
                return await event.reply_error("item-not-found")
            return await event.reply(info(event))
        if type_ == "get" and tag == f"{{{ns.DISCO_ITEMS}}}query":
            result = reply(stanza)
            sub(result, ns.DISCO_ITEMS, "query")
            return await event.reply(result)
        if type_ == "get" and tag == f"{{{ns.HTTP_UPLOAD}}}request":
            return await slot(event)
        if type_ == "get" and tag == f"{{{ns.PING}}}ping":
            return await event.reply(reply(stanza))
        return await event.reply_error("service-unavailable")

    async def refuse(event: StanzaEvent) -> bool:
        type_ = event.stanza.get("type")
        if (event.kind == "iq" and type_ in ("get", "set")) or (
            event.kind == "message" and type_ not in ("error", "groupchat")
        ):
            return await event.reply_error("service-unavailable")
        return True

    for scope in ("host", "bare", "full"):
        component.events.hook(f"iq/{scope}", on_iq if scope == "host" else refuse, DELIVERY)
        component.events.hook(f"message/{scope}", refuse, DELIVERY)
        component.events.hook(f"presence/{scope}", refuse, DELIVERY)
    module.hook("account-deleted", service.account_deleted)


spec = ModuleSpec(
    name="upload",
    summary="HTTP file upload (XEP-0363) on upload.<domain>, files served by the web listener",
    load=load,
    options={
        "domain": Option(str, "", "the service's domain; empty: upload.<host domain>"),
        "name": Option(str, "HTTP File Upload", "the service's name in discovery"),
        "url": Option(
            str,
            "",
            "base URL of the upload path; empty: http.public_url + /upload, else "
            "https://<domain>:<http.tls_port>/upload",
        ),
        "max_file_size": Option(int, 10 * 1024 * 1024, "largest file in bytes", min=1),
        "quota": Option(
            int, 1024 * 1024 * 1024, "bytes one account may keep stored (0: no limit)", min=0
        ),
        "daily_quota": Option(
            int, 200 * 1024 * 1024, "bytes one account may upload per 24 hours (0: no limit)", min=0
        ),
        "expire_after": Option(
            int, 30 * DAY, "seconds a file is kept after its slot was given (0: forever)", min=0
        ),
        "slot_lifetime": Option(int, 300, "seconds a slot waits for its upload", min=1),
        "cleanup_interval": Option(
            float, 3600.0, "seconds between two sweeps for expired files", min=0.5
        ),
    },
    implements=(
        Implements("XEP-0363", "1.1.0", note="PUT URL signed per slot; range requests on GET"),
    ),
)
