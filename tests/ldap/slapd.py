"""A real OpenLDAP slapd for tests: fresh mdb database from directory.ldif + generated bulk users,
on free loopback ports (ldap:// with StartTLS, and ldaps://), stoppable and restartable.

Needs Debian's `slapd` and `ldap-utils` (scripts/test installs them).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from make_ldif import BIG_GROUP, bulk  # noqa: E402

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PW = "root-secret"
SERVICE_DN = f"cn=xmpp,ou=services,{BASE}"
SERVICE_PW = "service-secret"
BULK_USERS = 1600
NAMED = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "wendy",
]  # fmt: skip
BIG_GROUP_DN = f"cn={BIG_GROUP},ou=roles,{BASE}"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

CONF = """\
{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
TLSCertificateFile {dir}/tls.crt
TLSCertificateKeyFile {dir}/tls.key
sizelimit unlimited

database mdb
maxsize 268435456
suffix "{base}"
rootdn "{root}"
rootpw {rootpw}
directory {dir}/db
index objectClass,uid,cn,memberUid,member eq
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


def tool(name: str) -> str:
    """slapd and slapadd live in /usr/sbin, which a user's PATH may lack."""
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Slapd:
    def __init__(self, base_dir: Path, bulk_users: int = BULK_USERS) -> None:
        from xmppd.transports.tls import make_self_signed

        self.dir = base_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "db").mkdir(exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.ca_file = self.dir / "tls.crt"  # self-signed: the certificate is its own CA
        make_self_signed(self.ca_file, self.dir / "tls.key", ["localhost"])
        includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS)
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(
            CONF.format(includes=includes, dir=self.dir, base=BASE, root=ROOT_DN, rootpw=ROOT_PW)
        )
        ldif = self.dir / "data.ldif"
        ldif.write_text((HERE / "directory.ldif").read_text() + "\n" + bulk(bulk_users, NAMED))
        subprocess.run(
            [tool("slapadd"), "-q", "-f", str(self.conf), "-l", str(ldif)],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def start(self) -> None:
        urls = f"{self.url}/ {self.ldaps_url}/"
        self.log = open(self.dir / "slapd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [tool("slapd"), "-f", str(self.conf), "-h", urls, "-d", "0"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.dir / 'slapd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("slapd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None

    def admin(self):  # -> ldap3.Connection bound as the root DN
        import ldap3

        return ldap3.Connection(self.url, ROOT_DN, ROOT_PW, auto_bind=True)

    def add_user(self, uid: str, name: str, password: str) -> None:
        conn = self.admin()
        ok = conn.add(
            f"uid={uid},ou=people,{BASE}",
            ["inetOrgPerson"],
            {"uid": uid, "cn": name, "sn": name.split()[-1], "displayName": name,
             "userPassword": password},
        )  # fmt: skip
        conn.unbind()
        assert ok, conn.result

    def ldapadd(self, ldif: str) -> None:
        """Add entries with OpenLDAP's own `ldapadd`, as an admin would."""
        result = subprocess.run(
            [shutil.which("ldapadd") or "ldapadd", "-x", "-H", self.url, "-D", ROOT_DN,
             "-w", ROOT_PW],
            input=ldif, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def delete(self, dn: str) -> None:
        conn = self.admin()
        ok = conn.delete(dn)
        conn.unbind()
        assert ok, conn.result

    def modify(self, dn: str, changes: dict) -> None:
        conn = self.admin()
        ok = conn.modify(dn, changes)
        conn.unbind()
        assert ok, conn.result

    def settings_toml(self, **overrides: object) -> str:
        """An [auth] table for xmppd pointing at this slapd (TOML text)."""
        values: dict[str, object] = {
            "servers": [self.url],
            "base_dn": f"ou=people,{BASE}",
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PW,
            "group_base": f"ou=groups,{BASE}",
            "admin_group": f"cn=xmpp-admins,ou=roles,{BASE}",
            **overrides,
        }
        lines = ["[auth]", 'backend = "ldap"', "", "[auth.ldap]"]
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
        return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
