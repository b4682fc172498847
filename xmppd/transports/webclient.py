"""The web client's static files at `/` on the web listener (docs/webclient.md).

The files live in the top-level `webclient/` folder, beside `xmppd/`; `pip install .` installs
them there too (package data of a `webclient` namespace package, pyproject.toml). No build
step: what is in the folder is what is served. Files are read once and kept in memory with a
strong ETag; every answer is revalidated (`no-cache`) since module URLs carry no version, so
an upgrade is seen on the next load. A strict CSP keeps the page to its own scripts, styles
and WebSocket.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
}
# A served path: segments of safe characters, none starting with a dot (no `..`, no dotfiles).
_PATH = re.compile(r"(/[A-Za-z0-9_\-][A-Za-z0-9_\-.]*)+")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def find_root() -> Path | None:
    """webclient/ beside xmppd/, in the source tree as in site-packages."""
    root = Path(__file__).resolve().parent.parent.parent / "webclient"
    return root if (root / "index.html").is_file() else None


def csp(host: str | None, file_origins: tuple[str, ...] = ()) -> str:
    """`connect-src` names the page's own WebSocket: CSP2 browsers do not match ws: to 'self'.
    `file_origins` are where the upload service's files live (its URL names the domain, which
    may not be the host the page was loaded from): images, media and uploads may use them."""
    sockets = f" wss://{host} ws://{host}" if host and _HOST.fullmatch(host) else ""
    files = "".join(f" {origin}" for origin in file_origins)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' data: blob:{files}; media-src 'self' blob:{files}; "
        f"connect-src 'self'{sockets}{files}; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class StaticFiles:
    """Path -> (body, content type, ETag), loaded on first request."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._cache: dict[str, tuple[bytes, str, str]] = {}
        self.file_origins: tuple[str, ...] = ()  # set when the upload services are attached

    def lookup(self, path: str) -> tuple[bytes, str, str] | None:
        if self.root is None:
            return None
        if path == "/":
            path = "/index.html"
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        kind = TYPES.get(Path(path).suffix)
        if kind is None or not _PATH.fullmatch(path):
            return None
        file = self.root / path[1:]
        if not file.is_file():
            return None
        body = file.read_bytes()
        hit = (body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self._cache[path] = hit
        return hit

    def respond(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The answer to GET/HEAD `path`, or None when no such file is served."""
        hit = self.lookup(path)
        if hit is None:
            return None
        body, kind, etag = hit
        common = [
            ("ETag", etag),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if kind.startswith("text/javascript"):
            # Public code: pages of other origins load widget.js's modules (docs/widget.md),
            # and module scripts are fetched with CORS. No credentials are involved.
            common.append(("Access-Control-Allow-Origin", "*"))
        if kind.startswith("text/html"):
            common += [
                ("Content-Security-Policy", csp(headers.get("host"), self.file_origins)),
                ("X-Frame-Options", "DENY"),
                ("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()"),
            ]
        if etag in (t.strip() for t in headers.get("if-none-match", "").split(",")):
            return 304, common, b""
        return 200, [("Content-Type", kind), *common], b"" if method == "HEAD" else body
