"""A real Roundcube (Debian's package, SQLite) under PHP's built-in server and a Dovecot IMAP
server, both with test-owned configurations in a temporary folder, for
tests/web/test_roundcube.py. Nothing outside that folder is written."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from support import free_port

ROUNDCUBE = Path("/usr/share/roundcube")
PUBLIC = Path("/var/lib/roundcube/public_html")
PLUGIN = Path(__file__).resolve().parents[1] / "integrations" / "roundcube" / "xmppd_chat"
PACKAGES = ("roundcube", "roundcube-sqlite3", "roundcube-plugins", "dovecot-imapd", "php-cli")


def install() -> list[str]:
    """apt-get the packages when some are missing (as scripts/test does); what still is."""
    if missing() and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=900,
        )
    return missing()


def missing() -> list[str]:
    """What is not installed."""
    need = {"php": "php-cli", "dovecot": "dovecot-imapd"}
    gone = [pkg for tool, pkg in need.items() if not shutil.which(tool)]
    if not (ROUNDCUBE / "index.php").is_file():
        gone.append("roundcube")
    return gone


def wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited early: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not listening on {port}: {log.read_text()[-3000:]}")


class Dovecot:
    """IMAP on a free port; users (address -> password) in a passwd-file; Maildirs here."""

    def __init__(self, base: Path, users: dict[str, str]) -> None:
        """`base` must be reachable by the `dovecot` user (mail is never delivered as root)."""
        self.base, self.port = base, free_port()
        self.mail = base / "mail"
        (base / "run").mkdir(parents=True)
        self.mail.mkdir()
        shutil.chown(self.mail, "dovecot", "dovecot")
        (base / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
        self.conf = base / "dovecot.conf"
        self.conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{self.mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={self.mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.base / "dovecot.out"
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        wait_port(self.port, self.proc, log)

    def deliver(self, user: str, message: str) -> None:
        """Put a message straight into the user's INBOX (Maildir new/)."""
        box = self.mail / user
        for sub in ("", "cur", "new", "tmp"):
            (box / sub).mkdir(exist_ok=True)
            shutil.chown(box / sub, "dovecot", "dovecot")
        file = box / "new" / f"{time.time():.6f}.test.{os.getpid()}"
        file.write_text(message.replace("\n", "\r\n"))
        shutil.chown(file, "dovecot", "dovecot")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # the master stops its processes
            self.proc.wait(10)


class Roundcube:
    """Roundcube's code from the package with our config, plugins folder and database."""

    def __init__(self, base: Path, imap_port: int, plugin_config: str) -> None:
        self.base, self.port = base, free_port()
        root = base / "install"
        for sub in ("config", "plugins", "logs", "temp", "public_html"):
            (root / sub).mkdir(parents=True)
        for name in ("program", "SQL", "index.php"):
            (root / name).symlink_to(ROUNDCUBE / name)
        (root / "skins").symlink_to("/var/lib/roundcube/skins")
        for plugin in (ROUNDCUBE / "plugins").iterdir():
            (root / "plugins" / plugin.name).symlink_to(plugin)
        (root / "plugins" / "xmppd_chat").symlink_to(PLUGIN)
        public = root / "public_html"
        (public / "index.php").write_text(
            f"<?php\ndefine('INSTALL_PATH', '{root}/');\ninclude INSTALL_PATH . 'index.php';\n"
        )
        (public / "program").symlink_to(PUBLIC / "program")
        (public / "plugins").symlink_to(root / "plugins")
        (public / "skins").symlink_to(root / "skins")
        shutil.copy("/etc/roundcube/defaults.inc.php", root / "config" / "defaults.inc.php")
        shutil.copy("/etc/roundcube/mimetypes.php", root / "config" / "mimetypes.php")
        db = base / "roundcube.db"
        with sqlite3.connect(db) as conn:
            conn.executescript((ROUNDCUBE / "SQL" / "sqlite.initial.sql").read_text())
        (root / "config" / "config.inc.php").write_text(f"""<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{db}?mode=0646';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '';
$config['des_key'] = 'test-des-key-of-24-chars';
$config['log_dir'] = '{root}/logs/';
$config['temp_dir'] = '{root}/temp/';
$config['skin'] = 'elastic';
$config['plugins'] = ['xmppd_chat'];
$config['enable_installer'] = false;
$config['use_https'] = false;
$config['session_samesite'] = 'Lax';
$config['preview_pane'] = true;
{plugin_config}
""")
        self.root = root
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.base / "php.log"
        self.proc = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{self.port}", "-t", str(self.root / "public_html")],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.root / "public_html",
            env={**os.environ, "PHP_CLI_SERVER_WORKERS": "4"},
            start_new_session=True,  # its workers are killed with it (stop)
        )
        wait_port(self.port, self.proc, log)

    def logs(self) -> str:
        out = [(self.base / "php.log").read_text(errors="replace")[-3000:]]
        for file in (self.root / "logs").glob("*"):
            out.append(f"{file.name}: {file.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers
            self.proc.wait(10)
