"""Administration: the commands the admin channel (and later the admin HTTP API) run.

`COMMANDS` maps a command name to an async handler `(server, args) -> JSON-able result`; the
admin socket (`transports/adminsock.py`) looks names up here and knows nothing else, so a new
command is one decorated function (docs/admin.md). Handlers raise `AdminError` for answers an
admin must read ("no account ...").

The same functions run against a stopped server: `maintenance(config)` opens the database and
loads every host with its modules, without listeners, so `account-deleted` is answered by the
same module code whether the server runs or not.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from auth.base import AuthError, NoSuchUser, UserExists

from .events import AccountCreated, AccountDeleted
from .protocol.jid import JID, JIDError

if TYPE_CHECKING:
    from .config import Config
    from .host import Host
    from .server import Server
    from .session import Session

log = logging.getLogger("xmppd.admin")

Handler = Callable[["Server", dict[str, Any]], Awaitable[Any]]
COMMANDS: dict[str, Handler] = {}
SOCKET_NAME = "admin.sock"
# Transport classes by name, as `sessions` shows them (no import of the transport layer here).
TRANSPORTS = {"ByteStreamConnection": "tcp", "WebSocketConnection": "websocket"}
TRANSPORTS["BoshConnection"] = "bosh"
TRANSPORTS["JsonChannels"] = "channels"
END_WAIT = 3.0  # seconds a deletion waits for the account's sessions to finish ending


class AdminError(Exception):
    """A refusal with a word for programs (`code`) and a sentence for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def command(name: str) -> Callable[[Handler], Handler]:
    """Register an admin command under `name`."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = handler
        return handler

    return register


def socket_path(config: Config) -> Any:
    return config.data_dir / SOCKET_NAME


# ---- accounts -----------------------------------------------------------------------------------


def account(server: Server, text: Any) -> tuple[Host, str]:
    """The host and localpart of an account JID given by an admin."""
    bare = parse_jid(text)
    if bare.local is None or bare.resource is not None:
        raise AdminError("bad-jid", f"{text!r} is not an account JID (user@domain)")
    host = server.hosts.get(bare.domain)
    if host is None:
        raise AdminError("not-served", f"{bare.domain!r} is not served here")
    return host, bare.local


def parse_jid(text: Any) -> JID:
    if not isinstance(text, str):
        raise AdminError("bad-request", "'jid' must be a string")
    try:
        return JID.parse(text)
    except JIDError as exc:
        raise AdminError("bad-jid", f"invalid JID {text!r}: {exc}") from None


def _text(args: dict[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name)
    if value is None and default is not None:
        value = default
    if not isinstance(value, str):
        raise AdminError("bad-request", f"'{name}' must be a string")
    return value


async def _auth_call(call: Awaitable[None], bare: str) -> None:
    try:
        await call
    except UserExists:
        raise AdminError("exists", f"{bare} already exists") from None
    except NoSuchUser:
        raise AdminError("no-account", f"no account {bare}") from None
    except ValueError as exc:  # a password the PRECIS profile refuses
        raise AdminError("bad-password", str(exc)) from None
    except (AuthError, NotImplementedError) as exc:
        raise AdminError("auth", str(exc) or "the auth backend refused") from None


async def add_user(server: Server, jid: str, password: str) -> str:
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    await _auth_call(host.auth.create_user(local, password), bare)
    await host.events.fire("account-created", AccountCreated(bare, local))
    return bare


async def set_password(
    server: Server, jid: str, password: str, *, keep: Session | None = None
) -> dict[str, Any]:
    """Change a password; its one-time passwords stop working and the account's other
    sessions end (`[server] password_change_ends_sessions`) with `reset`: RFC 6120 §4.9.3.16,
    the credentials of the stream were revoked (a client may log in again with the new one)."""
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    await _auth_call(host.auth.set_password(local, password), bare)
    server.credentials.revoke(user=bare)
    ended = 0
    end = server.config.server["password_change_ends_sessions"]
    if end:
        others = [s for s in sessions_of(host, bare) if s is not keep]
        ended = await end_sessions(others, "reset", "the password was changed")
    ended += await end_elsewhere(server, bare, "reset", "the password was changed", end=end)
    return {"jid": bare, "sessions_ended": ended}


async def delete_user(server: Server, jid: str) -> dict[str, Any]:
    """The account goes at once: no new login, its sessions end (`not-authorized`: RFC 6120
    §4.9.3.12, the entity is no longer authorized), then every module removes what it holds
    (`account-deleted`)."""
    host, local = account(server, jid)
    bare = f"{local}@{host.domain}"
    await _auth_call(host.auth.delete_user(local), bare)  # NoSuchUser: "no account ..."
    server.credentials.revoke(user=bare)
    ended = await end_everywhere(server, bare, "not-authorized", "the account was deleted")
    await server.bans.forget_account(bare)
    await host.events.fire("account-deleted", AccountDeleted(bare, local))
    log.info("account %s deleted (%d session(s) ended)", bare, ended)
    return {"jid": bare, "sessions_ended": ended}


# ---- sessions -----------------------------------------------------------------------------------


def sessions_of(host: Host, bare: str) -> list[Session]:
    return list(host.resources_of(bare).values())


async def end_sessions(sessions: list[Session], condition: str, text: str) -> int:
    """Close each with a stream error and wait (a little) until they have ended, so what they
    leave behind (offline messages, room presence) is settled before the caller goes on."""
    for session in sessions:
        session.kill(condition, text)
    with trio.move_on_after(END_WAIT):
        while any(not s.ended for s in sessions):
            await trio.sleep(0.02)
    return len(sessions)


def describe(session: Session) -> dict[str, Any]:
    transport = session.transport
    kind = TRANSPORTS.get(type(transport).__name__, type(transport).__name__)
    sm = session.sm
    return {
        "jid": session.full,
        "transport": kind,
        "address": getattr(transport, "peer", ""),
        "since": session.bound_at,
        "hibernating": bool(sm is not None and sm.hibernating),
    }


async def all_sessions(server: Server, jid: str | None = None) -> list[dict[str, Any]]:
    """`list_sessions` of every node (in cluster mode each entry names its node)."""
    found = list_sessions(server, jid)
    if server.cluster_admin is not None:
        for node, answer in (await server.cluster_admin.ask("sessions", {"jid": jid})).items():
            if not answer["ok"]:
                raise AdminError("node-silent", f"node {node}: {answer['result']}")
            found += answer["result"]
    return sorted(found, key=lambda d: (d["jid"], d["since"]))


def list_sessions(server: Server, jid: str | None = None) -> list[dict[str, Any]]:
    """This node's sessions."""
    found = []
    target = parse_jid(jid) if jid else None
    for host in server.hosts.values():
        if target is not None and target.domain != host.domain:
            continue
        for bare, resources in host.sessions.items():
            if target is not None and str(target.bare) != bare:
                continue
            for resource_, session in resources.items():
                if target is None or target.resource in (None, resource_):
                    found.append(describe(session))
                    if server.cluster is not None:
                        found[-1]["node"] = server.cluster.node
    return sorted(found, key=lambda d: (d["jid"], d["since"]))


async def kick(server: Server, jid: str, text: str = "") -> int:
    """End the sessions of an account (bare JID) or one session (full JID), on every node.
    RFC 6120 §4.9.3.14: `policy-violation` is "the entity has violated some local service
    policy", with text."""
    target = parse_jid(jid)
    host = server.hosts.get(target.domain)
    if host is None or target.local is None:
        raise AdminError("not-served", f"{jid!r} is not an account of this server")
    ended = await end_everywhere(
        server, str(target), "policy-violation", text or "disconnected by an admin"
    )
    if not ended:
        raise AdminError("no-session", f"{jid} has no session")
    return ended


async def end_here(server: Server, jid: str, condition: str, text: str) -> int:
    """End this node's sessions of an account (bare JID) or of one full JID."""
    target = parse_jid(jid)
    host = server.hosts.get(target.domain)
    if host is None:
        return 0
    sessions = [
        s for r, s in host.resources_of(str(target.bare)).items() if target.resource in (None, r)
    ]
    return await end_sessions(sessions, condition, text) if sessions else 0


async def end_everywhere(server: Server, jid: str, condition: str, text: str) -> int:
    """`end_here` on this node and, in cluster mode, on every other node that is up."""
    return await end_here(server, jid, condition, text) + await end_elsewhere(
        server, jid, condition, text
    )


async def end_elsewhere(
    server: Server, jid: str, condition: str, text: str, *, end: bool = True
) -> int:
    """In cluster mode, every other node that is up voids the account's one-time passwords
    (its own memory) and, with `end`, ends its sessions there; the number ended."""
    if server.cluster_admin is None:
        return 0
    args = {"jid": jid, "condition": condition, "text": text, "end": end}
    answers = (await server.cluster_admin.ask("end", args)).values()
    return sum(a["result"] for a in answers if a["ok"])


async def revoke_tokens_elsewhere(server: Server, entry: dict[str, Any]) -> int:
    """A token revocation (stored by this node) into every other node's memory."""
    if server.cluster_admin is None:
        return 0
    answers = (await server.cluster_admin.ask("revoke-tokens", entry)).values()
    for answer in answers:
        if not answer["ok"]:
            log.warning("a node did not take a token revocation: %s", answer["result"])
    return sum(a["result"] for a in answers if a["ok"])


def status(server: Server) -> dict[str, Any]:
    sessions = sum(len(r) for h in server.hosts.values() for r in h.sessions.values())
    rooms = sum(len(getattr(h.services.get("muc"), "rooms", {})) for h in server.hosts.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "uptime": round(time.monotonic() - server.started_at, 1),
        "hosts": sorted(server.hosts),
        "sessions": sessions,
        "accounts_online": sum(len(h.sessions) for h in server.hosts.values()),
        "rooms": rooms,
        "memory_rss_kib": _rss_kib(usage.ru_maxrss),
    }


async def cluster_status(server: Server) -> dict[str, Any]:
    """`status` of this node and, in cluster mode, "nodes": every node's own status (up and
    answering), or its state ("down", "no answer")."""
    info = status(server)
    if server.cluster_admin is None or server.cluster is None:
        return info
    nodes = {server.cluster.node: {"state": "up", **info}}
    for node, state in server.cluster_admin.nodes().items():
        nodes[node] = {"state": state}
    for node, answer in (await server.cluster_admin.ask("status", {})).items():
        nodes[node] = {"state": "up", **answer["result"]} if answer["ok"] else {"state": "silent"}
    info["node"] = server.cluster.node
    info["nodes"] = [{"node": n, **nodes[n]} for n in sorted(nodes)]
    return info


async def answer_peer(server: Server, verb: str, args: dict[str, Any]) -> Any:
    """What this node answers another node's admin question (xmppd/cluster_admin.py)."""
    if verb == "sessions":
        return list_sessions(server, args.get("jid"))
    if verb == "status":
        return status(server)
    if verb == "end":
        server.credentials.revoke(user=str(parse_jid(args["jid"]).bare))
        if not args.get("end", True):
            return 0
        return await end_here(server, args["jid"], args["condition"], args["text"])
    if verb == "revoke-tokens":
        return server.tokens.apply_peer(args)
    raise AdminError("unknown-command", f"no cluster verb {verb!r}")


def _rss_kib(peak: int) -> int:
    """The current resident size from /proc (Linux), else the peak getrusage reports."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return peak


# ---- the registry ---------------------------------------------------------------------------


@command("adduser")
async def _cmd_adduser(server: Server, args: dict[str, Any]) -> Any:
    return {"jid": await add_user(server, _text(args, "jid"), _text(args, "password"))}


@command("passwd")
async def _cmd_passwd(server: Server, args: dict[str, Any]) -> Any:
    return await set_password(server, _text(args, "jid"), _text(args, "password"))


@command("deluser")
async def _cmd_deluser(server: Server, args: dict[str, Any]) -> Any:
    return await delete_user(server, _text(args, "jid"))


@command("sessions")
async def _cmd_sessions(server: Server, args: dict[str, Any]) -> Any:
    return await all_sessions(server, _text(args, "jid", "") or None)


@command("kick")
async def _cmd_kick(server: Server, args: dict[str, Any]) -> Any:
    text = _text(args, "text", "")
    return {"sessions_ended": await kick(server, _text(args, "jid"), text)}


@command("revoke-tokens")
async def _cmd_revoke_tokens(server: Server, args: dict[str, Any]) -> Any:
    """Host-app tokens by id (`jti`) or all of a user's issued until now (`user`, a JID)."""
    jti, user = _text(args, "jti", "") or None, _text(args, "user", "") or None
    if jti is None and user is None:
        raise AdminError("bad-request", "give 'jti' or 'user'")
    if user is not None:
        user = str(parse_jid(user).bare)
    return {"sessions_ended": await server.tokens.revoke(jti=jti, user=user)}


@command("disable")
async def _cmd_disable(server: Server, args: dict[str, Any]) -> Any:
    from .accounts import disable

    reason = _text(args, "reason", "")
    return await disable(server, _text(args, "jid"), reason=reason, by="admin socket")


@command("enable")
async def _cmd_enable(server: Server, args: dict[str, Any]) -> Any:
    from .accounts import enable

    return await enable(server, _text(args, "jid"), by="admin socket")


@command("status")
async def _cmd_status(server: Server, args: dict[str, Any]) -> Any:
    return await cluster_status(server)


async def run_command(server: Server, name: str, args: dict[str, Any]) -> Any:
    handler = COMMANDS.get(name)
    if handler is None:
        known = ", ".join(sorted(COMMANDS))
        raise AdminError("unknown-command", f"unknown command {name!r}; known: {known}")
    return await handler(server, args)


# ---- a stopped server ---------------------------------------------------------------------------


@asynccontextmanager
async def maintenance(config: Config) -> AsyncIterator[Server]:
    """The server's hosts and modules over its database, without listeners or clients: for
    admin commands while `xmppd serve` is not running."""
    from .server import Server
    from .storage import open_database

    server = Server(config)
    server.db = await open_database(config.data_dir, **config.database_options)
    try:
        async with trio.open_nursery() as nursery:
            server._nursery = nursery
            await server.tokens.load(server.db.for_host(config.server["domain"]))
            await server.bans.load(server.db.for_host(config.server["domain"]))
            await server.hooks.load(server.db.for_host(config.server["domain"]))
            server._make_hosts()
            server.hooks.install_accounts()  # rows written now are sent at the next start
            yield server
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await server.db.close()
