"""Log output: the readable text lines, or one JSON object a line for log collectors.

`log.format = "json"` writes `{"time", "level", "logger", "message"}` and, when present,
`exception` (the formatted traceback) and the structured fields a call passed with
`extra={...}` (any attribute a standard `LogRecord` does not have). Values JSON cannot hold
are written as their `str()`. `server.log_level` and `log.format` change on SIGHUP.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def setup(level: str, kind: str = "text") -> None:
    """The root logger writes to stderr (systemd's journal takes it from there)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    apply(level, kind)


def apply(level: str, kind: str) -> None:
    """Set the level and format of every root handler (start-up and SIGHUP)."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    for handler in root.handlers:
        handler.setFormatter(formatter(kind))
