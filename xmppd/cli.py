"""`xmppd serve|adduser|passwd|deluser|check|migrate` — scripts depend on these exact verbs."""

from __future__ import annotations

import argparse
import getpass
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
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
        config = load(args.config)
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
        "-c", "--config", metavar="FILE", help="TOML config file (default: built-in defaults)"
    )
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = verbs.add_parser("serve", parents=[common], help="run the server")
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

    check = verbs.add_parser(
        "check", parents=[common], help="validate config, certificates and ports"
    )
    check.set_defaults(run=cmd_check)

    migrate = verbs.add_parser(
        "migrate", parents=[common], help="bring the database schema up to date"
    )
    migrate.set_defaults(run=cmd_migrate)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---- serve ---------------------------------------------------------------------------------------


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from .server import Server

    setup_logging(config.server["log_level"])
    loader.check(config)
    try:
        trio.run(Server(config).run)
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


def _account_command(
    config: Config, jid: str, action: Callable[[Any, str], Awaitable[None]], done: str
) -> int:
    """Run one change on the account store, turning auth errors into one-line messages."""
    from auth.base import NoSuchUser, UserExists
    from auth.internal import InternalAuth

    from .storage import open_database

    user, domain = _account(config, jid)

    async def run() -> None:
        db = await open_database(config.data_dir, **config.database_options)
        try:
            await action(InternalAuth(db.for_host(domain).keyval("accounts")), user)
        finally:
            await db.close()

    try:
        trio.run(run)
    except UserExists:
        raise SystemExit(f"xmppd: {user}@{domain} already exists") from None
    except NoSuchUser:
        raise SystemExit(f"xmppd: no account {user}@{domain}") from None
    except ValueError as exc:  # a password the PRECIS profile refuses
        raise SystemExit(f"xmppd: {exc}") from None
    print(f"{done} {user}@{domain}")
    return 0


def cmd_adduser(config: Config, args: argparse.Namespace) -> int:
    _account(config, args.jid)  # refuse a bad JID before asking for a password
    password = _read_password(args.password)
    return _account_command(
        config, args.jid, lambda auth, user: auth.create_user(user, password), "created"
    )


def cmd_passwd(config: Config, args: argparse.Namespace) -> int:
    _account(config, args.jid)
    password = _read_password(args.password)
    return _account_command(
        config,
        args.jid,
        lambda auth, user: auth.set_password(user, password),
        "changed the password of",
    )


def cmd_deluser(config: Config, args: argparse.Namespace) -> int:
    return _account_command(config, args.jid, lambda auth, user: auth.delete_user(user), "deleted")


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


# ---- check ---------------------------------------------------------------------------------------


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    """Validate without starting: config and modules, certificate, data dir, ports."""
    from .transports import tls

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
    for name, port in (("c2s", config.c2s["port"]), ("direct TLS", config.c2s["direct_tls_port"])):
        if port:
            problems += _check_port(name, port, config.c2s["interfaces"])
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
