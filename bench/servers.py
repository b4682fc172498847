"""Start and stop the servers under test: fresh data dir, free port, pinned to one core.

Each server runs in the foreground as a child of this process, under `taskset -c <core>`, with
its own config in a temporary directory; nothing touches the system-wide installations.
Accounts are `<prefix>0 .. <prefix>N-1`, all with one password and one salt (so the load
generator derives the SCRAM SaltedPassword once); the iteration count is the same for every
server. Creating them one by one through each server's CLI is far too slow for 5,000 accounts,
so each server class writes them straight into that server's storage format.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 10_000  # Prosody 0.12's default_iteration_count; xmppd's DEFAULT_ITERATIONS
NOFILE = 20_000


@dataclass(frozen=True)
class Accounts:
    count: int
    prefix: str = "u"
    password: str = "bench-password"
    salt: bytes = b"bench-salt-0123456789"
    iterations: int = ITERATIONS

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.count)]

    def scram(self, algo: str = "sha1") -> tuple[bytes, bytes]:
        """(StoredKey, ServerKey) shared by every account."""
        salted = hashlib.pbkdf2_hmac(algo, self.password.encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = hashlib.new(algo, client_key).digest()
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        return stored_key, server_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for `localhost`, shared by all servers."""
    cert, key = directory / "localhost.crt", directory / "localhost.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def nice_prefix(nice: int) -> list[str]:
    """`nice -n N` (exec'd, so the pid stays the server's); N < 0 shields from noisy neighbours."""
    return ["nice", "-n", str(nice)] if nice else []


def set_autogroup_nice(pid: int, nice: int) -> None:
    """With sched_autogroup (on by default), `nice` only ranks tasks within one session's
    group; groups share a core equally. So a process started with `start_new_session=True`
    gets its own group, and that group gets the same nice level."""
    if nice:
        with contextlib.suppress(OSError):  # no autogroup support: plain nice still applies
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def _raise_nofile() -> None:
    # Runs in the child, possibly after a user switch: import nothing here.
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class Server:
    """Base: subclasses write config and accounts, and give the command line."""

    name = "server"
    # The per-account message limit of this configuration, (msg/s, burst), or None: the load
    # generator keeps every account under it, as real users are (bench/loadgen.py).
    account_rate: tuple[float, int] | None = None

    def __init__(
        self,
        accounts: Accounts,
        *,
        tls: bool,
        core: int = 1,
        nice: int = 0,
        keep: bool = False,
        muc: bool = False,
    ):
        self.accounts = accounts
        self.tls = tls
        self.muc = muc  # a MUC service on conference.localhost, limits above the account count
        self.core = core
        self.nice = nice
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert, self.key = make_certificate(self.dir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config and accounts into self.dir."""
        raise NotImplementedError

    user: str | None = None  # run as this user instead of the current one

    def start(self) -> None:
        self.prepare()
        log = open(self.dir / "stdout.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [*nice_prefix(self.nice), "taskset", "-c", str(self.core), *self.command()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir, preexec_fn=_raise_nofile, env=self.env(), start_new_session=True,
            user=self.user, group=self.user,
        )  # fmt: skip
        set_autogroup_nice(self.proc.pid, self.nice)
        wait_port(self.port, self.proc)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self.dir / "stdout.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- Prosody -----------------------------------------------------------------------------------
PROSODY_CFG = """\
-- Generated by bench/servers.py: one host, c2s only, no s2s/http, no rate limits.
pidfile = "{dir}/prosody.pid"
run_as_root = true -- the benchmark runs as root in a throwaway directory
certificates = "{dir}"
data_path = "{dir}/data"
plugin_paths = {{}}
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping"{modules} }}
modules_disabled = {{ "s2s", "s2s_auth_certs"{disabled} }}
authentication = "internal_hashed"
default_iteration_count = {iterations}
c2s_require_encryption = {require_tls}
allow_registration = false
-- TCP_NODELAY, as xmppd (trio) has by default: latency then compares servers, not Nagle.
network_settings = {{ nagle = false }}
{extra}ssl = {{ certificate = "{cert}", key = "{key}" }}
VirtualHost "localhost"
"""

# Prosody 0.12's own MUC has no occupant or message-rate limit (those are community modules,
# not installed); new rooms are locked until configured, as in xmppd.
PROSODY_MUC_CFG = """
Component "conference.localhost" "muc"
"""


def _lua_string(raw: bytes) -> str:
    """A Lua string literal; Lua's `\\ddd` escapes are decimal."""
    safe = (chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in raw)
    return '"' + "".join(safe) + '"'


def write_prosody_accounts(accounts: Accounts, data: Path) -> None:
    """Prosody's datamanager layout: <data_path>/<host>/accounts/<user>.dat, a Lua table with
    the SCRAM-SHA-1 keys mod_auth_internal_hashed stores."""
    directory = data / "localhost" / "accounts"
    directory.mkdir(parents=True)
    stored, server = accounts.scram("sha1")
    body = (
        "return {\n"
        f'\t["iteration_count"] = {accounts.iterations};\n'
        f'\t["salt"] = {_lua_string(accounts.salt)};\n'
        f'\t["server_key"] = "{server.hex()}";\n'
        f'\t["stored_key"] = "{stored.hex()}";\n'
        "};\n"
    )
    for name in accounts.names():
        (directory / f"{name}.dat").write_text(body)


class Prosody(Server):
    """Prosody 0.12 with its default (incremental) Lua garbage collector."""

    name = "prosody"
    extra_config = ""
    modules: tuple[str, ...] = ()  # beyond the c2s set above; offline is off unless listed

    def prepare(self) -> None:
        cfg = PROSODY_CFG.format(
            dir=self.dir, port=self.port, iterations=self.accounts.iterations,
            require_tls="true" if self.tls else "false", cert=self.cert, key=self.key,
            extra=self.extra_config, modules="".join(f', "{m}"' for m in self.modules),
            disabled="" if "offline" in self.modules else ', "offline"',
        )  # fmt: skip
        if self.muc:
            cfg += PROSODY_MUC_CFG
        (self.dir / "prosody.cfg.lua").write_text(cfg)
        write_prosody_accounts(self.accounts, self.dir / "data")

    def command(self) -> list[str]:
        return ["prosody", "--config", str(self.dir / "prosody.cfg.lua"), "-F"]


class ProsodyGenerationalGC(Prosody):
    """Prosody with Lua 5.4's generational GC, a documented one-line setting.

    With thousands of sessions the default incremental collector stops the world for ~150 ms
    about once a second and costs about half of the CPU per message; this variant shows
    Prosody at its best, so a ratio against it is the harder comparison.
    """

    name = "prosody-gengc"
    extra_config = 'gc = { mode = "generational" }\n'


class ProsodyMam(Prosody):
    """Prosody as a user runs it: archive (mod_mam, every message, default internal storage),
    offline storage, carbons and stream management, against xmppd's default module set."""

    name = "prosody-mam"
    modules = ("mam", "offline", "carbons", "smacks")
    extra_config = "default_archive_policy = true\n"


# -- xmppd -------------------------------------------------------------------------------------
XMPPD_CFG = """\
# Generated by bench/servers.py
[server]
domain = "localhost"
data_dir = "{dir}/data"
log_level = "warning"
demo_account = false

[tls]
certificate = "{cert}"
key = "{key}"

[c2s]
interfaces = ["127.0.0.1"]
port = {port}
direct_tls_port = 0
require_encryption = {require_tls}

[limits]
connections_per_ip = {max_conn}
"""
# No web listener unless a benchmark configures one: the default ports would clash.
XMPPD_NO_WEB = """
[http]
port = 0
tls_port = 0
"""

# xmppd's MUC (on by default) limits occupants per room and messages per occupant: raised far
# above what a benchmark sends, so that only the fan-out is measured.
XMPPD_MUC_CFG = """
[modules.muc]
max_occupants = {max_occupants}
message_rate = 100000.0
message_burst = 100000
"""


class Xmppd(Server):
    name = "xmppd"
    web_config = XMPPD_NO_WEB

    modules_config = ""  # empty: the default module set, as shipped
    account_rate = (10.0, 60)  # [modules.abuse] messages_per_second, message_burst defaults

    def prepare(self) -> None:
        cfg = XMPPD_CFG.format(
            dir=self.dir, port=self.port, cert=self.cert, key=self.key,
            require_tls="true" if self.tls else "false", max_conn=self.accounts.count + 1000,
        )  # fmt: skip
        if self.muc:
            cfg += XMPPD_MUC_CFG.format(max_occupants=self.accounts.count + 10)
        cfg += self.web_config + self.modules_config
        (self.dir / "xmppd.toml").write_text(cfg)
        (self.dir / "data").mkdir()
        self.write_accounts()

    def write_accounts(self) -> None:
        """Bulk-insert the accounts, then ask xmppd's own auth backend to accept one.

        The schema comes from xmppd's storage code (opening the database migrates it); the rows
        are inserted in one transaction, since one `set` per account fsyncs each time.
        """
        sys.path.insert(0, str(REPO))
        import trio

        data_dir = self.dir / "data"
        trio.run(self._with_db, data_dir, None)
        value = json.dumps(self.account_record(), separators=(",", ":"))
        with sqlite3.connect(data_dir / "xmppd.sqlite") as conn:
            conn.executemany(
                'INSERT INTO keyval (host, store, "user", value) VALUES (?, ?, ?, ?)',
                [("localhost", "accounts", name, value) for name in self.accounts.names()],
            )
        conn.close()
        trio.run(self._with_db, data_dir, self._check_login)

    @staticmethod
    async def _with_db(data_dir: Path, action: Any) -> None:
        from xmppd.storage import open_database

        db = await open_database(data_dir)
        try:
            if action is not None:
                await action(db)
        finally:
            await db.close()

    async def _check_login(self, db: Any) -> None:
        from auth.internal import InternalAuth

        auth = InternalAuth(db.for_host("localhost").keyval("accounts"))
        name = self.accounts.names()[0]
        if not await auth.check_password(name, self.accounts.password):
            raise RuntimeError("xmppd's InternalAuth refuses the bulk-written account")

    def account_record(self) -> dict[str, object]:
        """The record auth/internal.py stores: {"scram": {"SHA-1": ScramCredentials...}, ...}."""
        from auth.scram import derive_credentials

        a = self.accounts
        scram = {
            name: derive_credentials(name, a.password, a.salt, a.iterations).to_dict()
            for name in ("SHA-1", "SHA-256", "SHA-512")
        }
        return {"scram": scram, "created": int(time.time())}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "xmppd", "serve", "-c", str(self.dir / "xmppd.toml")]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.source()) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def source(self) -> Path:
        """This checkout, or $XMPPD_SRC (e.g. `git archive HEAD` unpacked, so that editing
        the checkout cannot change a running benchmark)."""
        return Path(os.environ.get("XMPPD_SRC", REPO)).resolve()


# The default modules without the ones that store or track per message: archive, offline
# storage, carbons, stream management, unread counts (and the MUC, which a 1:1 benchmark
# never touches). Keep in step with xmppd/config.py DEFAULT_MODULES.
LEAN_MODULES = [
    "disco", "ping", "version", "time", "roster", "presence", "subscriptions", "blocking",
    "vcard", "private", "csi", "directory", "caps", "pep", "upload",
]  # fmt: skip


class XmppdLean(Xmppd):
    """xmppd without per-message storage: the floor the default set is measured against."""

    name = "xmppd-lean"
    account_rate = None  # no `abuse` module
    modules_config = "\n[modules]\nenabled = [" + ", ".join(f'"{m}"' for m in LEAN_MODULES) + "]\n"


class XmppdBase(Xmppd):
    """xmppd from another source tree ($XMPPD_BASE, e.g. `git archive HEAD~1` unpacked), for
    an A/B of two commits in one interleaved run."""

    name = "xmppd-base"

    def source(self) -> Path:
        return Path(os.environ["XMPPD_BASE"]).resolve()


# -- ejabberd (optional: apt-get install ejabberd erlang-luerl) ------------------------------------
EJABBERD_CFG = """\
# Generated by bench/servers.py: one host, c2s only, no shapers, no s2s/http listeners.
# backlog 128 as Prosody's (ejabberd's default of 5 drops SYNs at 100 logins in flight).
hosts:
  - localhost
loglevel: warning
certfiles:
  - "{cert}"
  - "{key}"
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 128
    starttls: true
    starttls_required: {require_tls}
    shaper: none
    access: all
    max_stanza_size: 262144
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
s2s_access: none
shaper: {{}}
shaper_rules:
  max_user_sessions: 10
  c2s_shaper: none
acl: {{}}
access_rules:
  local:
    allow: all
  c2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"""


class Ejabberd(Server):
    """ejabberd 23.01 (Debian) in the foreground under its own Erlang node name.

    ejabberdctl runs the VM as the `ejabberd` user (via su), so the directory is handed to that
    user, and the measured pid is the beam.smp process, not the one we spawned. Accounts come
    from a Prosody-format data dir through ejabberd's own `import_prosody`, which keeps the
    stored SCRAM keys as they are.
    """

    name = "ejabberd"
    # As that user, ejabberdctl runs erl directly; as root it would go through su, whose PAM
    # limits put the open-files limit back to 1024.
    user = "ejabberd"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node = f"bench{self.port}@localhost"
        self.beam_pid = 0

    def prepare(self) -> None:
        cfg = EJABBERD_CFG.format(
            port=self.port, cert=self.cert, key=self.key,
            require_tls="true" if self.tls else "false",
        )  # fmt: skip
        (self.dir / "ejabberd.yml").write_text(cfg)
        (self.dir / "ejabberdctl.cfg").write_text('ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n')
        shutil.copy("/etc/ejabberd/inetrc", self.dir / "inetrc")
        for sub in ("spool", "logs"):
            (self.dir / sub).mkdir()
        write_prosody_accounts(self.accounts, self.dir / "import")
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(self.dir)], check=True)
        self.dir.chmod(0o755)

    def ctl(self) -> list[str]:
        return [
            "ejabberdctl", "--config-dir", str(self.dir), "--logs", str(self.dir / "logs"),
            "--spool", str(self.dir / "spool"), "--node", self.node,
        ]  # fmt: skip

    def command(self) -> list[str]:
        return [*self.ctl(), "foreground"]

    def start(self) -> None:
        super().start()
        self.beam_pid = self._find_beam()
        imported = subprocess.run(
            [*self.ctl(), "import_prosody", str(self.dir / "import")],
            capture_output=True, text=True, timeout=600, user=self.user, group=self.user,
            env=self.env(),
        )  # fmt: skip
        if imported.returncode != 0:
            raise RuntimeError(f"import_prosody failed: {imported.stdout} {imported.stderr}")

    def env(self) -> dict[str, str]:
        # The Erlang cookie lives in the ejabberd user's home.
        return {**os.environ, "HOME": "/var/lib/ejabberd"}

    def _find_beam(self) -> int:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"beam.smp") and self.node.encode() in cmdline:
                return int(entry.name)
        raise RuntimeError(f"no beam.smp for node {self.node}")

    @property
    def pid(self) -> int:
        return self.beam_pid

    def stop(self) -> None:
        if self.beam_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.beam_pid, signal.SIGTERM)
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(20)
        super().stop()


SERVERS: dict[str, type[Server]] = {
    "prosody": Prosody,
    "prosody-gengc": ProsodyGenerationalGC,
    "prosody-mam": ProsodyMam,
    "xmppd": Xmppd,
    "xmppd-lean": XmppdLean,
    "xmppd-base": XmppdBase,
    "ejabberd": Ejabberd,
}


def main() -> int:
    """`python bench/servers.py NAME [COUNT] [--tls] [--keep] [--muc]`: run one server until
    Ctrl-C."""
    name, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
    flags = {"tls": "--tls" in sys.argv, "keep": "--keep" in sys.argv, "muc": "--muc" in sys.argv}
    server = SERVERS[name](Accounts(count), **flags)
    server.start()
    print(f"{name} pid={server.pid} port={server.port} dir={server.dir}", flush=True)
    try:
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
