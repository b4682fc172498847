"""`log.format = "json"`: every line xmppd writes is one JSON object (xmppd/logformat.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from support import ServerProcess, connect, run

from xmppd.logformat import JsonFormatter


def test_a_real_server_writes_json_lines(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, extra_config='\n[log]\nformat = "json"\n')
    server.add_user("alice", "alice-secret")
    server.start()
    try:

        async def login() -> None:
            client = await connect(server, "alice", password="alice-secret")
            await client.close()

        run(login())
    finally:
        server.stop()
    # The CLI's own lines (adduser) come before the server's: take the server's run.
    lines = server.log_text().splitlines()
    start = next(i for i, line in enumerate(lines) if '"config: ' in line)
    records = [json.loads(line) for line in lines[start:] if line.strip()]
    assert len(records) > 5
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("+00:00")
    messages = [r["message"] for r in records]
    assert any("authenticated as alice@localhost (SCRAM-SHA-256)" in m for m in messages)
    assert any(r["logger"] == "xmppd" and r["level"] == "info" for r in records)


def test_fields_and_exceptions_are_kept() -> None:
    record = logging.LogRecord("xmppd.api", logging.ERROR, __file__, 1, "ban %s", ("bob",), None)
    record.key_name = "ops"  # extra={"key_name": "ops"}
    record.until = object()  # not JSON: written as its str()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "ban bob" and line["level"] == "error"
    assert line["key_name"] == "ops" and line["until"].startswith("<object")
    assert "ValueError: boom" in line["exception"]
