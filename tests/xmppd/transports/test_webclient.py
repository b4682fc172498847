"""The web client's static files (xmppd/transports/webclient.py) and their packaging."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from xmppd.transports.webclient import StaticFiles, csp, find_root

ROOT = Path(__file__).resolve().parents[3]


def test_the_source_tree_webclient_is_found_and_served_with_types() -> None:
    static = StaticFiles(find_root())
    assert static.root == ROOT / "webclient"
    for path, kind in [
        ("/", "text/html; charset=utf-8"),
        ("/js/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
    ]:
        status, headers, body = static.respond("GET", path, {"host": "chat.example.org"})
        assert status == 200 and dict(headers)["Content-Type"] == kind and body, path


def test_paths_outside_the_folder_dotfiles_and_unknown_types_are_not_served(
    tmp_path: Path,
) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / ".secret.js").write_text("x")
    (tmp_path / "server.py").write_text("x")
    (tmp_path.parent / "outside.js").write_text("x")
    static = StaticFiles(tmp_path)
    for path in ("/../outside.js", "/.secret.js", "/server.py", "/js/", "//etc/passwd", "/a%2e.js"):
        assert static.respond("GET", path, {}) is None, path
    assert static.respond("GET", "/index.html", {})[0] == 200
    assert StaticFiles(None).respond("GET", "/", {}) is None


def test_head_and_a_matching_etag() -> None:
    static = StaticFiles(find_root())
    status, headers, body = static.respond("HEAD", "/js/phx.js", {})
    assert status == 200 and body == b""
    etag = dict(headers)["ETag"]
    status, headers, body = static.respond("GET", "/js/phx.js", {"if-none-match": f'"x", {etag}'})
    assert status == 304 and body == b"" and dict(headers)["ETag"] == etag


def test_the_csp_names_the_host_only_when_it_is_a_host() -> None:
    assert "connect-src 'self' wss://chat.example.org:5443 ws://chat.example.org:5443;" in csp(
        "chat.example.org:5443"
    )
    # A Host header cannot add sources or directives to the policy.
    for bad in ("evil.example; script-src *", "a b", "x'", None):
        assert "connect-src 'self';" in csp(bad), bad


def test_a_wheel_ships_the_web_client(tmp_path: Path) -> None:
    """`pip install .` must give the server its page without Node.js or a build step."""
    source = tmp_path / "src"  # a copy: pip builds in the tree and leaves build/ behind
    skip = shutil.ignore_patterns(
        ".git", "node_modules", "artifacts", "build", "*.egg-info", ".venv"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("xmppd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"webclient/{p.relative_to(ROOT / 'webclient')}" for p in (ROOT / "webclient").rglob("*.*")
    }
    assert shipped and shipped <= names, shipped - names
