"""`xmppd serve|adduser|passwd|deluser|disable|enable|sessions|kick|revoke-tokens|status|check|
migrate|import|export` — scripts depend on these exact verbs. Account verbs act on the running
server through its admin socket, and on the storage directly only when it is stopped
(docs/admin.md)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from . import __version__, loader
from .config import Config, load
from .options import ConfigError
from .protocol.jid import JID, JIDError
from .storage import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        config = load(args.config, search=True)
        return args.run(config, args)
    except ConfigError as exc:
        print(f"xmppd: configuration error: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    except StorageError as exc:
        print(f"xmppd: storage: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmppd", description="XMPP server")
    parser.add_argument("--version", action="version", version=f"xmppd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: the first of $XMPPD_CONFIG, "
        "~/.config/xmppd/xmppd.toml, /etc/xmppd/xmppd.toml; else built-in defaults)",
    )
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = verbs.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes sharing the ports (SO_REUSEPORT), each a cluster node; needs [cluster]",
    )
    serve.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # set by --workers
    serve.set_defaults(run=cmd_serve)

    adduser = verbs.add_parser("adduser", parents=[common], help="create an account")
    adduser.add_argument("jid")
    adduser.add_argument(
        "--password", help="the password (prompted, or read from stdin, when omitted)"
    )
    adduser.set_defaults(run=cmd_adduser)

    passwd = verbs.add_parser("passwd", parents=[common], help="change an account's password")
    passwd.add_argument("jid")
    passwd.add_argument(
        "--password", help="the new password (prompted or read from stdin when omitted)"
    )
    passwd.set_defaults(run=cmd_passwd)

    deluser = verbs.add_parser("deluser", parents=[common], help="delete an account")
    deluser.add_argument("jid")
    deluser.set_defaults(run=cmd_deluser)

    disable = verbs.add_parser(
        "disable", parents=[common], help="keep an account but refuse its logins; end its sessions"
    )
    disable.add_argument("jid")
    disable.add_argument("--reason", help="shown to the user when a login is refused")
    disable.set_defaults(run=cmd_disable)

    enable = verbs.add_parser("enable", parents=[common], help="let a disabled account log in")
    enable.add_argument("jid")
    enable.set_defaults(run=cmd_enable)

    sessions = verbs.add_parser("sessions", parents=[common], help="list the online sessions")
    sessions.add_argument("jid", nargs="?", help="only this account (bare) or resource (full)")
    sessions.set_defaults(run=cmd_sessions)

    kick = verbs.add_parser("kick", parents=[common], help="end an account's or one session")
    kick.add_argument("jid", help="bare JID: all its sessions; full JID: that one")
    kick.add_argument("--text", help="the reason shown to the user")
    kick.set_defaults(run=cmd_kick)

    revoke = verbs.add_parser(
        "revoke-tokens", parents=[common], help="revoke host-app tokens (docs/channels.md)"
    )
    revoke.add_argument("--jti", help="the token with this id")
    revoke.add_argument("--user", help="every token of this JID issued until now")
    revoke.set_defaults(run=cmd_revoke_tokens)

    status = verbs.add_parser("status", parents=[common], help="is the server running; figures")
    status.set_defaults(run=cmd_status)

    check = verbs.add_parser(
        "check", parents=[common], help="validate config, certificates and ports"
    )
    check.add_argument(
        "what", nargs="?", choices=["ldap"], help="ldap: test the directory of [auth.ldap]"
    )
    check.set_defaults(run=cmd_check)

    migrate = verbs.add_parser(
        "migrate", parents=[common], help="bring the database schema up to date"
    )
    migrate.set_defaults(run=cmd_migrate)

    export = verbs.add_parser(
        "export", parents=[common], help="write all accounts to a XEP-0227 file"
    )
    export.add_argument("file", type=Path)
    export.set_defaults(run=cmd_export)

    import_ = verbs.add_parser(
        "import",
        parents=[common],
        help="add accounts from a XEP-0227 file or directory (Prosody, ejabberd, xmppd)",
    )
    import_.add_argument("file", type=Path)
    import_.set_defaults(run=cmd_import)

    api_key = verbs.add_parser(
        "api-key", parents=[common], help="make a key for the admin HTTP API (docs/api.md)"
    )
    api_key.add_argument("name", help="the key's name, as the audit log shows it")
    api_key.add_argument(
        "--scopes", default="read", help="comma-separated: read,users,rooms,moderation,post,admin"
    )
    api_key.set_defaults(run=cmd_api_key)
    return parser


def setup_logging(level: str, kind: str = "text") -> None:
    from .logformat import setup

    setup(level, kind)  # text, or JSON lines (log.format)


# ---- serve ---------------------------------------------------------------------------------------


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from .server import Server

    setup_logging(config.server["log_level"], config.log["format"])
    loader.check(config)
    logging.getLogger("xmppd").info(
        "config: %s; data directory: %s", config.path or "built-in defaults", config.data_dir
    )
    if getattr(args, "workers", 1) > 1:
        from .workers import supervise

        return supervise(config, args.workers)
    if getattr(args, "worker", 0):
        from .workers import worker_config

        worker_config(config, args.worker)
    server = Server(config)
    server.reuse_port = bool(getattr(args, "worker", 0))
    try:
        trio.run(server.run)
    except (OSError, ConfigError, StorageError, BaseExceptionGroup) as error:
        return _report_start_failure(error)
    return 0


def _report_start_failure(error: BaseException) -> int:
    """Ports in use, unreadable files, bad certificates, an unreachable database: one clear
    line each, no traceback."""
    leaves = _leaves(error)
    if not all(isinstance(exc, (OSError, ConfigError, StorageError)) for exc in leaves):
        raise error
    for exc in leaves:
        if isinstance(exc, ConfigError):
            print(f"xmppd: configuration error: {exc}", file=sys.stderr)
        elif isinstance(exc, StorageError):
            print(f"xmppd: storage: {exc}", file=sys.stderr)
        else:
            print(f"xmppd: {exc.strerror if exc.errno else exc}", file=sys.stderr)
    return 78 if any(isinstance(exc, ConfigError) for exc in leaves) else 1


def _leaves(error: BaseException) -> list[Any]:
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for exc in error.exceptions for leaf in _leaves(exc)]


# ---- accounts ------------------------------------------------------------------------------------


def _account(config: Config, text: str) -> tuple[str, str]:
    try:
        jid = JID.parse(text)
    except JIDError as exc:
        raise SystemExit(f"xmppd: invalid JID {text!r}: {exc}") from exc
    if jid.local is None or jid.resource is not None:
        raise SystemExit(f"xmppd: {text!r} is not an account JID (user@domain)")
    if jid.domain not in [h.domain for h in config.hosts]:
        served = ", ".join(h.domain for h in config.hosts)
        raise SystemExit(f"xmppd: {jid.domain!r} is not served here (domains: {served})")
    return jid.local, jid.domain


def _read_password(given: str | None, confirm: bool = True) -> str:
    if given is not None:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise SystemExit("xmppd: the passwords differ")
    return first


def _admin(
    config: Config, command: str, args: dict[str, Any], *, needs_server: bool = False
) -> tuple[Any, str]:
    """Run an admin command on the running server (its admin socket), or, when none answers,
    on the storage directly through the same code (`admin.maintenance`). Returns the result
    and where it ran."""
    from . import admin
    from .transports.adminsock import NotRunning, request

    try:
        try:
            return request(admin.socket_path(config), command, args), RUNNING
        except NotRunning:
            if needs_server:
                raise SystemExit(f"xmppd: {command}: the server is not running") from None

        async def offline() -> Any:
            async with admin.maintenance(config) as server:
                return await admin.run_command(server, command, args)

        return trio.run(offline), STOPPED
    except admin.AdminError as exc:
        raise SystemExit(f"xmppd: {exc.message}") from None


RUNNING = "via the running server"
STOPPED = "server not running: wrote the database directly"


def _ended(result: dict[str, Any]) -> str:
    count = result.get("sessions_ended", 0)
    return f", {count} session(s) ended" if count else ""


def cmd_adduser(config: Config, args: argparse.Namespace) -> int:
    _account(config, args.jid)  # refuse a bad JID before asking for a password
    password = _read_password(args.password)
    result, where = _admin(config, "adduser", {"jid": args.jid, "password": password})
    print(f"created {result['jid']} ({where})")
    return 0


def cmd_passwd(config: Config, args: argparse.Namespace) -> int:
    _account(config, args.jid)
    password = _read_password(args.password)
    result, where = _admin(config, "passwd", {"jid": args.jid, "password": password})
    print(f"changed the password of {result['jid']} ({where}{_ended(result)})")
    return 0


def cmd_deluser(config: Config, args: argparse.Namespace) -> int:
    _account(config, args.jid)
    result, where = _admin(config, "deluser", {"jid": args.jid})
    print(f"deleted {result['jid']} ({where}{_ended(result)})")
    return 0


def cmd_sessions(config: Config, args: argparse.Namespace) -> int:
    wanted = {"jid": args.jid} if args.jid else {}
    found, _where = _admin(config, "sessions", wanted, needs_server=True)
    for s in found:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["since"]))
        state = " (hibernating)" if s["hibernating"] else ""
        node = f"\t{s['node']}" if "node" in s else ""  # cluster mode: where it is
        print(f"{s['jid']}\t{s['transport']}\t{s['address']}\t{since}{state}{node}")
    print(f"{len(found)} session(s)", file=sys.stderr)
    return 0


def cmd_kick(config: Config, args: argparse.Namespace) -> int:
    result, _where = _admin(
        config, "kick", {"jid": args.jid, "text": args.text or ""}, needs_server=True
    )
    print(f"ended {result['sessions_ended']} session(s) of {args.jid}")
    return 0


def cmd_disable(config: Config, args: argparse.Namespace) -> int:
    payload = {"jid": args.jid, "reason": args.reason or ""}
    result, where = _admin(config, "disable", payload)
    print(f"disabled {result['jid']} ({where}){_ended(result)}")
    return 0


def cmd_enable(config: Config, args: argparse.Namespace) -> int:
    result, where = _admin(config, "enable", {"jid": args.jid})
    state = "enabled" if result["was_disabled"] else "was not disabled:"
    print(f"{state} {result['jid']} ({where})")
    return 0


def cmd_revoke_tokens(config: Config, args: argparse.Namespace) -> int:
    if not args.jti and not args.user:
        raise SystemExit("xmppd: revoke-tokens: give --jti or --user")
    payload = {"jti": args.jti or "", "user": args.user or ""}
    result, where = _admin(config, "revoke-tokens", payload)
    print(f"revoked ({where}){_ended(result)}")
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from . import admin
    from .transports.adminsock import NotRunning, request

    try:
        info = request(admin.socket_path(config), "status", {})
    except NotRunning:
        print("server not running")
        return 3  # like `systemctl status` for a stopped unit
    print(
        f"running (pid {info['pid']}), up {info['uptime']:.0f} s, hosts {', '.join(info['hosts'])}"
    )
    print(f"sessions: {info['sessions']} ({info['accounts_online']} account(s) online)")
    print(f"rooms: {info['rooms']}")
    print(f"memory: {info['memory_rss_kib'] / 1024:.1f} MiB resident")
    for n in info.get("nodes", ()):  # cluster mode: every node, this one included
        figures = f", sessions: {n['sessions']}, pid {n['pid']}" if "sessions" in n else ""
        this = " (this node)" if n["node"] == info["node"] else ""
        print(f"cluster node: {n['node']}{this} {n['state']}{figures}")
    return 0


# ---- migrate -------------------------------------------------------------------------------------


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    """Apply the missing schema migrations (the server also does at start) and say which."""
    from .storage import open_database
    from .storage.migrations import LATEST_VERSION, MIGRATIONS

    async def run() -> tuple[str, int]:
        db = await open_database(config.data_dir, **config.database_options)
        await db.close()
        return db.where, db.migrated_from

    where, found = trio.run(run)
    if found == LATEST_VERSION:
        print(f"{where}: schema version {found}, up to date")
        return 0
    print(f"{where}: migrated the schema from version {found} to {LATEST_VERSION}")
    for number in range(found + 1, LATEST_VERSION + 1):
        print(f"  {number}: {MIGRATIONS[number - 1].summary}")
    return 0


# ---- import / export (XEP-0227) ------------------------------------------------------------------


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    from .porting.exporter import export_path

    try:
        counts = trio.run(export_path, config, args.file)
    except OSError as exc:
        print(f"xmppd: export: cannot write {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 73  # EX_CANTCREAT
    print(f"exported to {args.file}: {_summary(counts.counts) or 'nothing'}")
    return 0


def cmd_import(config: Config, args: argparse.Namespace) -> int:
    from .porting.importer import import_path
    from .porting.pie import PieError

    try:
        report = trio.run(import_path, config, args.file)
    except PieError as exc:
        print(f"xmppd: import: {exc}", file=sys.stderr)
        return 65  # EX_DATAERR
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for bare in report.skipped:
        print(f"skipped {bare}: the account exists already")
    counts = {"accounts": len(report.imported), **report.counts}
    print(f"imported {_summary(counts)}")
    return 0


_KINDS = ("accounts", "roster items", "subscription requests", "vCards")
_KINDS += ("private XML namespaces", "offline messages")


def _summary(counts: dict[str, int]) -> str:
    shown = [k for k in _KINDS if counts.get(k) or k == "accounts"]
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in shown)


# ---- check ---------------------------------------------------------------------------------------


def cmd_api_key(config: Config, args: argparse.Namespace) -> int:
    """Print a new key (once: only its hash is kept) and the TOML lines for the config."""
    from .api.keys import SCOPES, new_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes or not args.name.replace("-", "").replace("_", "").isalnum():
        print(f"xmppd: a name of letters, digits, - and _; scopes among {', '.join(SCOPES)}")
        return 2
    key, digest = new_key()
    print(f"API key (shown once; give it to the client): {key}\n")
    print("Add to the config file, then restart the server:\n")
    print(f'[api.keys.{args.name}]\nhash = "{digest}"\nscopes = {json.dumps(scopes)}')
    return 0


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    """Validate without starting: config and modules, certificate, data dir, ports."""
    from .transports import tls

    if getattr(args, "what", None) == "ldap":
        return cmd_check_ldap(config)

    problems: list[str] = []
    where = config.path or "built-in defaults"
    loader.check(config)
    print(f"config: ok ({where}); hosts: {', '.join(h.domain for h in config.hosts)}")
    cert, key = config.tls["certificate"], config.tls["key"]
    if cert or key:
        try:
            tls.server_context(Path(cert), Path(key))
            print(f"certificate: ok ({cert})")
        except ConfigError as exc:
            problems.append(f"certificate: {exc.message}")
    else:
        print(f"certificate: self-signed, kept in {config.data_dir / 'certs'}")
    problems += _check_data_dir(config.data_dir)
    http = config.http
    for name, port, interfaces in (
        ("c2s", config.c2s["port"], config.c2s["interfaces"]),
        ("direct TLS", config.c2s["direct_tls_port"], config.c2s["interfaces"]),
        ("https", http["tls_port"], http["interfaces"]),
        ("http", http["port"], http["plain_interfaces"]),
    ):
        if port:
            problems += _check_port(name, port, interfaces)
    if config.cluster["enabled"]:
        from . import cluster

        problems += cluster.check(config)
    for problem in problems:
        print(f"problem: {problem}")
    print("all checks passed" if not problems else f"{len(problems)} problem(s) found")
    return 1 if problems else 0


def _check_data_dir(data_dir: Path) -> list[str]:
    probe = (
        data_dir
        if data_dir.exists()
        else next((p for p in data_dir.parents if p.exists()), Path("/"))
    )
    if not probe.is_dir():
        return [f"data_dir: {data_dir} is not a directory"]
    import os

    if not os.access(probe, os.W_OK):
        return [f"data_dir: {probe} is not writable"]
    print(f"data_dir: ok ({data_dir})")
    return []


def _check_port(name: str, port: int, interfaces: list[str]) -> list[str]:
    problems = []
    for interface in interfaces:
        host = "" if interface == "*" else interface
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                problems.append(f"{name}: cannot listen on {interface} port {port}: {exc.strerror}")
                continue
        print(f"{name}: {interface} port {port} is free")
    return problems


# ---- check ldap ----------------------------------------------------------------------------------


def cmd_check_ldap(config: Config) -> int:
    """Connect to each directory server, bind the service account, run the user and group
    filters and say what was found; every failure is explained in plain words."""
    if config.auth["backend"] != "ldap":
        print("auth: backend is not 'ldap'; set [auth] backend = \"ldap\" and an [auth.ldap] table")
        return 1
    from auth.ldap import Directory

    s = config.auth["ldap"]
    problems = 0
    for url in s["servers"]:
        try:
            Directory({**s, "servers": [url]}).connect().unbind()
            tls = "ldaps" if url.startswith("ldaps:") else "StartTLS" if s["starttls"] else "none"
            print(f"server {url}: reachable (TLS: {tls})")
        except Exception as exc:
            problems += 1
            print(f"problem: server {url}: {_explain_ldap(exc, s)}")
    directory = Directory(s)
    try:
        conn = directory.service_connection()
        who = s["bind_dn"] or "anonymous"
        print(f"service account: bound as {who}")
        users = _check_step("users", lambda: directory.list_users(conn), s)
        if users is not None:
            sample = ", ".join(f"{u.username} ({u.display_name(s['display_name_attribute'])})"
                               for u in users[:5])  # fmt: skip
            print(f"users: {len(users)} found under {s['base_dn']}; sample: {sample or 'none'}")
            if not users:
                print("problem: no users match user_filter under base_dn: nobody can log in")
                problems += 1
        problems += users is None
        if users is None:
            raise _Stop
        groups = _check_step("groups", lambda: directory.list_groups(conn, users or []), s)
        if groups is not None:
            limit = s["max_group_size"]
            shown = [g for g in groups if not limit or len(g.members) <= limit]
            sample = ", ".join(f"{g.name} ({len(g.members)} members)" for g in groups[:5])
            print(f"groups: {len(groups)} found, {len(shown)} shown as roster groups; "
                  f"sample: {sample or 'none'}")  # fmt: skip
            if not groups:
                print("warning: no groups match group_filter: directory contacts will be empty")
        problems += groups is None
        if s["admin_group"]:
            admins = _check_step("admin group", lambda: directory.read_group(
                conn, s["admin_group"], users or []), s)  # fmt: skip
            if admins is not None:
                print(f"admin group: {len(admins.members)} member(s): {', '.join(admins.members)}")
            problems += admins is None
        conn.unbind()
    except _Stop:
        pass  # explained already; later steps would only repeat it
    except Exception as exc:
        problems += 1
        print(f"problem: service account: {_explain_ldap(exc, s)}")
    print("all checks passed" if not problems else f"{problems} problem(s) found")
    return 1 if problems else 0


class _Stop(Exception):
    pass


def _check_step(what: str, step: Callable[[], Any], s: dict[str, Any]) -> Any:
    try:
        return step()
    except Exception as exc:
        print(f"problem: {what}: {_explain_ldap(exc, s)}")
        return None


def _explain_ldap(exc: BaseException, s: dict[str, Any]) -> str:
    """What went wrong, in words an admin can act on."""
    text = str(exc)
    result = getattr(exc, "result", None) or {}
    code = result.get("result") if isinstance(result, dict) else None
    if code == 32:
        return (f"the base DN does not exist on the server ({result.get('matched') or 'no part'} "
                f"matched): check base_dn / group_base / admin_group ({text})")  # fmt: skip
    if code == 87 or "filter" in type(exc).__name__.lower() or "filter" in text.lower():
        return (
            f"the filter is not valid LDAP filter syntax (check parentheses and '=' in "
            f"user_filter {s['user_filter']!r} and group_filter {s['group_filter']!r}): {text}"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
        return ("the server's TLS certificate is not trusted: set ca_file to the CA that signed it "
                f"and use the name in the certificate ({text})")  # fmt: skip
    if "refused" in text.lower() and "service account" not in text:
        return f"connection refused: nothing listens there (wrong host or port, or down) ({text})"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return (f"no answer within {s['connect_timeout']:g} s / {s['timeout']:g} s: host down, "
                f"firewall or wrong port ({text})")  # fmt: skip
    if "invalidCredentials" in text:
        return f"the service account was refused: wrong bind_dn or bind_password ({text})"
    return text
