"""tests/web/browser_driver.mjs as an asyncio helper: one headless Chromium page, driven by
commands (goto, click, fill, wait, eval, shot...) while the test runs XMPP clients."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "web"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
_tags = itertools.count(1)


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls) -> Browser:
        ARTIFACTS.mkdir(exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "browser_driver.mjs"),
            str(ARTIFACTS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        return cls(proc)

    async def do(self, op: str, timeout: float = 30, **args: Any) -> Any:
        """The command's result; AssertionError with the browser's words when it failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        tag = next(_tags)
        self.proc.stdin.write((json.dumps({"op": op, "tag": tag, **args}) + "\n").encode())
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert line, "the browser driver exited"
            answer = json.loads(line)
            if answer.get("tag") == tag:
                break
        assert "error" not in answer, f"{op} {args}: {answer['error']} {answer.get('errors')}"
        return answer["ok"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
