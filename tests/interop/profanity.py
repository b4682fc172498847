"""Drive Profanity (Debian's console XMPP client) inside a private tmux server.

Profanity is a full-screen ncurses program: we type into it with `tmux send-keys` and read the
screen with `tmux capture-pane`. Each instance gets its own HOME/XDG directories and its own tmux
socket (`tmux -L`), so nothing touches the user's real configuration or tmux sessions.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

TOOLS = ("profanity", "tmux")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class Profanity:
    def __init__(self, base: Path, width: int = 200, height: int = 60) -> None:
        self.socket = f"xmppd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        home = base / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "profanity"]
        self.tmux("new-session", "-d", "-s", "prof", "-x", str(width), "-y", str(height), *command)

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def type(self, text: str) -> None:
        """Type a line and press Enter (`-l`: the text is literal, never a key name)."""
        self.tmux("send-keys", "-t", "prof", "-l", text)
        self.tmux("send-keys", "-t", "prof", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "prof")

    async def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Poll the screen until `pattern` (a regex) shows; on timeout fail with the screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if match := re.search(pattern, screen):
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"profanity never showed {pattern!r} in {timeout:g} s; last screen:\n{screen}"
                )
            await asyncio.sleep(0.1)  # the slixmpp clients in the same loop keep running

    async def login(self, jid: str, password: str, host: str, port: int) -> str:
        """STARTTLS login; accepts the self-signed certificate when asked. Returns the full JID."""
        self.type(f"/connect {jid} server {host} port {port}")
        await self.wait_for(r"Enter password:")
        self.type(password)
        found = await self.wait_for(r"Use '/tls allow'|logged in successfully")
        if "tls allow" in found.group(0):
            self.type("/tls allow")
        logged_in = await self.wait_for(rf"({re.escape(jid)}/\S+) logged in successfully")
        return logged_in.group(1)

    def close(self) -> None:
        try:
            self.type("/quit")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._alive():
                time.sleep(0.1)
        finally:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)

    def _alive(self) -> bool:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", "prof"], capture_output=True
        )
        return result.returncode == 0
