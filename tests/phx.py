"""The stock `phoenix` npm client (tests/web/chat_driver.mjs) as an asyncio test helper, and
the password login over HTTP, for the chat protocol tests (docs/channels.md)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from support import ServerProcess

HERE = Path(__file__).resolve().parent / "web"
_tags = itertools.count(1)


def http_post(
    server: ServerProcess,
    path: str,
    body: dict | bytes | None = None,
    *,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.http_port, timeout=30, source_address=(source, 0)
    )
    for _ in range(100):  # ServerProcess.start does not wait for the plain HTTP port
        try:
            conn.connect()
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    conn.request(
        "POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    answer = conn.getresponse()
    raw = answer.read()
    conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, parsed


def login(server: ServerProcess, user: str, password: str) -> str:
    status, _headers, body = http_post(
        server, "/login", {"jid": f"{user}@localhost", "password": password}
    )
    assert status == 200, body
    return body["token"]


class Phx:
    """One phoenix.js socket in a node process: join, push, and wait for what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: ServerProcess, token: str, transport: str = "websocket") -> Phx:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "chat_driver.mjs"),
            f"ws://127.0.0.1:{server.http_port}/socket",
            token,
            transport,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(json.loads(line))
            self._new.set()

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def wait(self, match: Any, timeout: float = 15, start: int = 0) -> dict:
        """The first printed line from index `start` for which `match(line)` is true."""
        deadline = asyncio.get_running_loop().time() + timeout
        index = start
        while True:
            while index < len(self.lines):
                line = self.lines[index]
                index += 1
                if match(line):
                    return line
            self._new.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"timed out; printed: {self.lines[-15:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def join(self, topic: str, payload: dict | None = None) -> dict:
        self.send(op="join", topic=topic, payload=payload or {})
        line = await self.wait(lambda x: x.get("joined") == topic or x.get("join_error") == topic)
        assert "joined" in line, line
        return line["reply"]

    async def push(self, topic: str, event: str, payload: dict | None = None) -> dict:
        """The ok response; AssertionError with the error response otherwise."""
        answer = await self.request(topic, event, payload)
        assert "ok" in answer, answer
        return answer["ok"]

    async def request(self, topic: str, event: str, payload: dict | None = None) -> dict:
        tag = next(_tags)
        self.send(op="push", tag=tag, topic=topic, event=event, payload=payload or {})
        return await self.wait(lambda x: x.get("tag") == tag)

    async def event(self, topic: str, event: str, where: Any = None, start: int = 0) -> dict:
        def match(line: dict) -> bool:
            if line.get("topic") != topic or line.get("event") != event:
                return False
            return where is None or where(line["payload"])

        return (await self.wait(match, start=start))["payload"]

    async def presence(self, topic: str, where: Any, start: int = 0) -> dict:
        line = await self.wait(
            lambda x: x.get("sync") == topic and where(x["presence"]), start=start
        )
        return line["presence"]

    def events(self, topic: str, event: str) -> list[dict]:
        return [
            x["payload"] for x in self.lines if x.get("topic") == topic and x.get("event") == event
        ]

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                self.send(op="exit")
                await asyncio.wait_for(self.proc.wait(), 5)
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
