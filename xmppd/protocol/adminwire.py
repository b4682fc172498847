"""The admin channel's wire format, sans-IO: one JSON object per line, each way.

Request:  {"id": <any JSON>, "command": "<name>", "args": {...}}\\n
Response: {"id": <the same>, "ok": true, "result": <JSON>}\\n
      or  {"id": <the same>, "ok": false, "error": {"code": "<word>", "message": "<text>"}}\\n

`AdminFraming` cuts requests out of received bytes. A line longer than `max_line` or that is not
a JSON object with a string `command` yields a `BadRequest` carrying the error response to send;
after an over-long line the connection is unusable (`broken`): the shell answers and closes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    id: Any
    command: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BadRequest:
    response: bytes


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def ok(request_id: Any, result: Any) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error(request_id: Any, code: str, message: str) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


class AdminFraming:
    __slots__ = ("max_line", "_buffer", "broken")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self.broken = False

    def receive_data(self, data: bytes) -> list[Request | BadRequest]:
        if self.broken:
            return []
        self._buffer += data
        events: list[Request | BadRequest] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.strip():
                events.append(parse(line, self.max_line))
        if len(self._buffer) > self.max_line:
            self.broken = True
            self._buffer.clear()
            too_big = f"requests are limited to {self.max_line} bytes"
            events.append(BadRequest(error(None, "too-big", too_big)))
        return events


def parse(line: bytes, max_line: int = MAX_LINE) -> Request | BadRequest:
    if len(line) > max_line:
        return BadRequest(error(None, "too-big", f"requests are limited to {max_line} bytes"))
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return BadRequest(error(None, "bad-json", f"not JSON: {exc}"))
    if not isinstance(doc, dict):
        return BadRequest(error(None, "bad-request", "a request is a JSON object"))
    request_id = doc.get("id")
    command, args = doc.get("command"), doc.get("args", {})
    if not isinstance(command, str) or not command:
        return BadRequest(error(request_id, "bad-request", "'command' must be a string"))
    if not isinstance(args, dict):
        return BadRequest(error(request_id, "bad-request", "'args' must be an object"))
    return Request(request_id, command, args)
