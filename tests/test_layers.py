"""The dependency rule of DESIGN.md, checked by reading every import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.add(".".join([*base, node.module or ""]).rstrip("."))
            else:
                found.add(node.module or "")
    return found


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_protocol_is_sans_io() -> None:
    for path in files("xmppd/protocol"):
        bad = {name for name in imports_of(path) if name.split(".")[0] in ("trio", "socket", "ssl")}
        bad |= {
            n
            for n in imports_of(path)
            if n.startswith("xmppd.") and not n.startswith("xmppd.protocol")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pubsub_never_imports_xmppd() -> None:
    for path in files("pubsub"):
        bad = {name for name in imports_of(path) if name.split(".")[0] == "xmppd"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_core_does_not_import_transports() -> None:
    core = [
        ROOT / "xmppd" / f"{name}.py" for name in ("session", "router", "host", "module", "events")
    ]
    for path in core + files("xmppd/modules"):
        bad = {name for name in imports_of(path) if name.startswith("xmppd.transports")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_file_is_too_long() -> None:
    for folder in ("xmppd", "pubsub", "auth"):
        for path in files(folder):
            lines = path.read_text().count("\n")
            assert lines <= 650, f"{path.relative_to(ROOT)} has {lines} lines"
