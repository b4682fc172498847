"""The admin channel: a Unix socket in the data directory, owner-only, line-delimited JSON.

The server side is a thin trio shell over `protocol/adminwire.py`; commands come from
`xmppd.admin.COMMANDS`. Only the server's own user (or root) may connect: the socket is 0600
in a directory no one else may write to, and the peer's uid is checked (SO_PEERCRED).
`request()` is the client the CLI uses (blocking stdlib socket, one request per connection).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .. import admin
from ..options import ConfigError
from ..protocol import adminwire as wire

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppd.admin")

REQUEST_TIMEOUT = 60.0  # seconds one command may run
IDLE_TIMEOUT = 30.0  # seconds a connection may stay without a complete request
MAX_CONNECTIONS = 16


class NotRunning(Exception):
    """No server answers on the admin socket (none there, or a stale one)."""


# ---- server -------------------------------------------------------------------------------


async def serve_admin(
    server: Server, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED
) -> None:
    path = admin.socket_path(server.config)
    sock = _bind(path)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    limit = trio.CapacityLimiter(MAX_CONNECTIONS)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, server, stream, limit)
    finally:
        with contextlib.suppress(OSError):
            if path.exists() and os.stat(path).st_ino == os.fstat(sock.fileno()).st_ino:
                path.unlink()
        sock.close()


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """Unix socket addresses are limited to 107 bytes: a longer path is reached through its
    directory's descriptor under /proc/self/fd (Linux)."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _bind(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_directory(path.parent)
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise OSError(errno.EADDRINUSE, f"another xmppd serves this data directory ({path})")
        path.unlink()  # stale: left by a server that did not stop cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window with looser permissions
    try:
        with _address(path) as address:
            sock.bind(address)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(8)
    sock.setblocking(False)
    return sock


def _check_directory(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise ConfigError(f"data_dir {directory} belongs to another user: no admin socket there")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"data_dir {directory} is writable by others (mode {stat.S_IMODE(info.st_mode):o}):"
            " chmod go-w it; the admin socket must not be replaceable"
        )


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            with _address(path) as address:
                probe.connect(address)
        except OSError:
            return False
    return True


def _peer_allowed(stream: trio.SocketStream) -> bool:
    creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


async def _serve_one(
    server: Server, stream: trio.SocketStream, limit: trio.CapacityLimiter
) -> None:
    async with stream:
        if limit.available_tokens == 0 or not _peer_allowed(stream):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(wire.error(None, "refused", "not allowed or too many"))
            return
        async with limit:
            framing = wire.AdminFraming()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while not framing.broken:
                    with trio.move_on_after(IDLE_TIMEOUT):
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        for event in framing.receive_data(data):
                            await stream.send_all(await _answer(server, event))
                        continue
                    return  # idle too long


async def _answer(server: Server, event: wire.Request | wire.BadRequest) -> bytes:
    if isinstance(event, wire.BadRequest):
        return event.response
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            result = await admin.run_command(server, event.command, event.args)
        json.dumps(result)  # a handler returning something unencodable is our bug: say so
    except admin.AdminError as exc:
        return wire.error(event.id, exc.code, exc.message)
    except trio.TooSlowError:
        return wire.error(event.id, "timeout", f"no result within {REQUEST_TIMEOUT:g} s")
    except Exception:
        log.exception("admin command %s failed", event.command)
        return wire.error(event.id, "internal", "the command failed; see the server log")
    log.info("admin command %s done", event.command)
    return wire.ok(event.id, result)


# ---- client -------------------------------------------------------------------------------


def request(path: Path, command: str, args: dict[str, Any], timeout: float = 90.0) -> Any:
    """Run one command on the running server; NotRunning when nothing answers there (no
    socket, or a stale one: connection refused); AdminError for a refusal."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(str(exc)) from None
        sock.sendall(wire.encode({"id": 1, "command": command, "args": args}))
        buffer = b""
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise admin.AdminError("closed", "the server closed the admin connection")
            buffer += chunk
    answer = json.loads(buffer.partition(b"\n")[0])
    if not answer.get("ok"):
        error = answer.get("error") or {}
        raise admin.AdminError(error.get("code", "error"), error.get("message", "failed"))
    return answer.get("result")
