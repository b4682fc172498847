"""Storage stays below the features: it imports no module, session or transport code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

STORAGE = Path(__file__).resolve().parents[3] / "xmppd" / "storage"
ALLOWED = {"trio", "psycopg", "psycopg_pool", "xmppd.storage"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            names.add(node.module or "")
    return names


def test_storage_imports_only_the_stdlib_its_drivers_and_itself():
    files = sorted(STORAGE.glob("*.py"))
    assert {p.name for p in files} >= {"base.py", "sql.py", "sqlite.py", "postgres.py"}
    for path in files:
        for name in imported(path):
            top = name.split(".")[0]
            ok = (
                top in sys.stdlib_module_names or top in ALLOWED or name.startswith("xmppd.storage")
            )
            assert ok, f"{path.name} imports {name}"


def test_sqlite_deployments_never_import_psycopg():
    for name in ("__init__.py", "base.py", "sql.py", "sqlite.py", "migrations.py"):
        assert not any(n.startswith("psycopg") for n in imported(STORAGE / name)), name
