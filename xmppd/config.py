"""One TOML file -> typed configuration. Defaults work with no file at all.

Which file: `-c FILE`, else the first that exists of `$XMPPD_CONFIG`,
`$XDG_CONFIG_HOME/xmppd/xmppd.toml` (`~/.config/xmppd/xmppd.toml`) and
`/etc/xmppd/xmppd.toml`; else the built-in defaults. Relative paths in a file resolve against
the file's folder, so every verb finds the same data wherever it is run from.

Every error names the key and the line (see `options.ConfigError`). Module options are declared by
the modules themselves and validated by the loader against the same `[modules.<name>]` tables.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api.keys import SCHEMA as API  # the admin HTTP API's [api] section (docs/api.md)
from .api.keys import check_config as check_api
from .hooks.settings import SCHEMA as HOOKS  # [hooks]: subscriptions and webhooks (docs/hooks.md)
from .options import ConfigError, Option, Schema, SourceMap, validate
from .protocol.jid import JIDError, prep_domain

LOG_LEVELS = ("debug", "info", "warning", "error")

SERVER: Schema = {
    "domain": Option(str, "localhost", "the XMPP domain users live on (user@domain)"),
    "extra_domains": Option(list, [], "more virtual hosts served by this process"),
    "data_dir": Option(
        str, "", "where the database, certificate and keys live; empty: ~/.local/share/xmppd"
    ),
    "log_level": Option(str, "info", "log verbosity", choices=LOG_LEVELS),
    "admins": Option(list, [], "bare JIDs with admin rights (docs/admin.md, roles)"),
    "limited": Option(list, [], "bare JIDs with the limited role: no room creation, no strangers"),
    "limited_block_strangers": Option(
        bool, True, "limited accounts refuse messages and requests from strangers by default"
    ),
    "demo_account": Option(bool, True, "create demo@<domain> on first start, print its password"),
    "password_change_ends_sessions": Option(
        bool, True, "a password change ends the account's other sessions (docs/admin.md)"
    ),
}
STORAGE: Schema = {
    "driver": Option(str, "sqlite", "storage driver", choices=("sqlite", "postgres")),
    "path": Option(str, "", "SQLite file; empty means <data_dir>/xmppd.sqlite"),
    "dsn": Option(str, "", "PostgreSQL connection string or postgresql:// URL (driver postgres)"),
    "pool_size": Option(
        int, 8, "PostgreSQL connections at most (driver postgres)", min=1, max=1000
    ),
    "connect_timeout": Option(int, 10, "seconds to reach PostgreSQL (at least 2)", min=2),
    "retry_interval": Option(
        float,
        2.0,
        "seconds between probes of an unreachable PostgreSQL (calls fail at once meanwhile)",
        min=0.1,
    ),
}
TLS: Schema = {
    "certificate": Option(
        str, "", "PEM certificate chain; empty: self-signed, made on first start"
    ),
    "key": Option(str, "", "PEM private key for the certificate"),
}
C2S: Schema = {
    "interfaces": Option(list, ["127.0.0.1", "::1"], "addresses to listen on ('*' for all)"),
    "port": Option(int, 5222, "STARTTLS port (0 disables)", min=0, max=65535),
    "direct_tls_port": Option(int, 5223, "XEP-0368 direct TLS port (0 disables)", min=0, max=65535),
    "require_encryption": Option(bool, True, "refuse authentication before TLS"),
    "allow_plain_without_tls": Option(bool, False, "offer SASL PLAIN on unencrypted streams"),
}
LIMITS: Schema = {
    "stanza_size": Option(int, 256 * 1024, "max bytes of one stanza after login", min=1024),
    "preauth_stanza_size": Option(int, 16 * 1024, "max bytes before login", min=1024),
    "max_depth": Option(int, 32, "max element nesting in a stanza", min=4, max=1000),
    "sasl_attempts": Option(int, 5, "failed logins per stream before it is closed", min=1),
    "connections_per_ip": Option(int, 100, "concurrent connections per client address", min=1),
    "bytes_per_second": Option(
        int, 64 * 1024, "read rate per connection; faster senders are paused", min=512
    ),
    "burst_bytes": Option(int, 256 * 1024, "bytes a connection may send at once", min=1024),
    "queued_bytes": Option(
        int, 2 * 1024 * 1024, "outgoing bytes queued for a slow reader", min=1024
    ),
    "queued_stanzas": Option(int, 5000, "outgoing stanzas queued for a slow reader", min=10),
    "login_timeout": Option(float, 30.0, "seconds to finish TLS, login and bind", min=1),
    "idle_timeout": Option(float, 600.0, "seconds of silence before a stream is closed", min=1),
    "keepalive_interval": Option(float, 120.0, "whitespace keepalive when idle", min=1),
    "tls_handshake_timeout": Option(float, 10.0, "seconds for a TLS handshake", min=1),
    "tls_handshakes": Option(
        int, 256, "concurrent TLS handshakes per listener; more wait in the backlog", min=1
    ),
    "resources_per_account": Option(int, 20, "concurrent sessions per account", min=1),
    "login": Option(dict, {}, "password guessing: the [limits.login] table below"),
}
AUTH: Schema = {
    "backend": Option(str, "internal", "where accounts live", choices=("internal", "ldap")),
    "ldap": Option(dict, {}, "the directory when backend = 'ldap' (docs/ldap.md)"),
    "tokens": Option(dict, {}, "host-application tokens, as [auth.tokens] (docs/channels.md)"),
}
HTTP: Schema = {
    "interfaces": Option(list, ["127.0.0.1", "::1"], "addresses for the HTTPS port ('*' for all)"),
    "tls_port": Option(
        int, 5443, "HTTPS port: WebSocket, BOSH, host-meta (0 disables)", min=0, max=65535
    ),
    "plain_interfaces": Option(list, ["127.0.0.1", "::1"], "addresses for the plain HTTP port"),
    "port": Option(
        int, 5280, "plain HTTP port, for a TLS-terminating proxy (0 disables)", min=0, max=65535
    ),
    "plain_is_encrypted": Option(
        bool, True, "streams over the plain port count as encrypted (a local TLS proxy)"
    ),
    "public_url": Option(str, "", "base URL in host-meta, e.g. https://chat.example.org"),
    "origins": Option(list, [], "WebSocket Origins allowed besides our own ('*' for any)"),
    "cors_origins": Option(list, ["*"], "Origins allowed to read host-meta and BOSH (CORS)"),
    "max_header_bytes": Option(int, 8192, "max bytes of a request line and headers", min=1024),
    "max_body_bytes": Option(int, 262144, "max bytes of a request body (BOSH)", min=1024),
    "max_message_bytes": Option(int, 262144, "max bytes of one WebSocket message", min=1024),
    "messages_per_second": Option(
        float, 50.0, "WebSocket messages / BOSH requests per second; more are paused", min=1
    ),
    "sessions_per_ip": Option(int, 20, "WebSocket and BOSH sessions per client address", min=1),
    "request_timeout": Option(float, 10.0, "seconds to send an HTTP request's body", min=1),
    "header_timeout": Option(
        float, 5.0, "seconds to send a request line and headers (and between requests)", min=1
    ),
    "pending_per_ip": Option(
        int, 16, "connections per address before their request head; oldest dropped", min=1
    ),
    "trusted_proxies": Option(
        list, [], "proxy addresses/networks whose X-Forwarded-For / Forwarded is believed"
    ),
    "bosh_max_wait": Option(float, 60.0, "longest a BOSH request is held (XEP-0124 wait)", min=1),
    "bosh_max_inactivity": Option(
        float, 60.0, "BOSH session ends after this many seconds without a request", min=5
    ),
    "bosh_polling": Option(float, 2.0, "shortest interval between BOSH polls", min=0),
}
CLUSTER: Schema = {  # docs/cluster.md
    "enabled": Option(bool, False, "run as one node of a cluster (needs Redis and PostgreSQL)"),
    "node": Option(str, "", "this node's name, unique in the cluster; empty: the host name"),
    "redis": Option(
        list, ["redis://127.0.0.1:6379/0"], "Redis URL(s), tried in order (a Redis Cluster works)"
    ),
    "prefix": Option(str, "xmppd", "prefix of every Redis key and channel of this cluster"),
    "heartbeat": Option(float, 1.5, "seconds between presence gossip heartbeats", min=0.05),
    "down_period": Option(
        float, 30.0, "seconds of silence before a node's sessions count as gone", min=0.1
    ),
    "permdown_period": Option(
        float, 1200.0, "seconds of silence before a node is forgotten for good", min=1
    ),
    "room_lease": Option(
        float, 10.0, "seconds a MUC room's owner node holds it unrenewed: the takeover time", min=1
    ),
}
FILTER: Schema = {  # docs/config.md [filter]: the word filter (xmppd/wordfilter.py)
    "rules": Option(dict, {}, "rule name = regular expression refused in messages"),
    "ignore_case": Option(bool, True, "rules match regardless of letter case"),
}
METRICS: Schema = {  # docs/admin.md "Metrics"
    "enabled": Option(bool, True, "count what /metrics reports (false: every probe is a no-op)"),
    "allow": Option(
        list, ["127.0.0.1", "::1"], "client addresses/networks that may read /metrics"
    ),
    "port": Option(
        int, 0, "a plain-HTTP port serving only /metrics (0: on the HTTP listeners only)",
        min=0, max=65535,
    ),
    "interfaces": Option(list, ["127.0.0.1", "::1"], "addresses of metrics.port"),
}  # fmt: skip
LOG: Schema = {
    "format": Option(str, "text", "log lines: text, or json (one object a line)",
                     choices=("text", "json")),
}  # fmt: skip
SECTIONS: dict[str, Schema] = {
    "server": SERVER,
    "storage": STORAGE,
    "tls": TLS,
    "c2s": C2S,
    "limits": LIMITS,
    "http": HTTP,
    "auth": AUTH,
    "cluster": CLUSTER,
    "api": API,
    "filter": FILTER,
    "metrics": METRICS,
    "log": LOG,
    "hooks": HOOKS,
}


_HOOK_DEFAULTS = {name: option.default for name, option in HOOKS.items()}


@dataclass(slots=True)
class HostConfig:
    domain: str
    modules: list[str]
    module_options: dict[str, dict[str, Any]]


@dataclass(slots=True)
class Config:
    server: dict[str, Any]
    storage: dict[str, Any]
    tls: dict[str, Any]
    c2s: dict[str, Any]
    limits: dict[str, Any]
    http: dict[str, Any]
    auth: dict[str, Any]
    hosts: list[HostConfig]
    cluster: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    api: dict[str, Any] = field(default_factory=lambda: {"keys": {}})
    filter: dict[str, Any] = field(default_factory=lambda: {"rules": {}, "ignore_case": True})
    metrics: dict[str, Any] = field(default_factory=lambda: {"enabled": True})
    log: dict[str, Any] = field(default_factory=lambda: {"format": "text"})
    hooks: dict[str, Any] = field(default_factory=lambda: dict(_HOOK_DEFAULTS))
    path: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    source: SourceMap | None = None

    @property
    def data_dir(self) -> Path:
        if not self.server["data_dir"]:
            return default_data_dir()
        return self.resolve(self.server["data_dir"])

    def resolve(self, path: str) -> Path:
        """Relative paths are relative to the config file's folder (`base_dir`)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_path(self) -> Path:
        return (
            self.resolve(self.storage["path"])
            if self.storage["path"]
            else (self.data_dir / "xmppd.sqlite")
        )

    @property
    def database_options(self) -> dict[str, Any]:
        """Keyword arguments for `storage.open_database` after the data dir."""
        storage = self.storage
        if storage["driver"] == "sqlite":
            return {"driver": "sqlite", "dsn": str(self.database_path)}
        return {
            "driver": storage["driver"],
            "dsn": storage["dsn"],
            "pool_size": storage["pool_size"],
            "connect_timeout": storage["connect_timeout"],
            "retry_interval": storage["retry_interval"],
        }

    def host(self, domain: str) -> HostConfig:
        for host in self.hosts:
            if host.domain == domain:
                return host
        raise KeyError(domain)


# One per line: feature work adds its module here.
DEFAULT_MODULES = [
    "disco",
    "ping",
    "version",
    "time",
    "roster",
    "presence",
    "subscriptions",
    "offline",
    "carbons",
    "blocking",
    "vcard",
    "private",
    "csi",
    "sm",
    "directory",
    "mam",
    "muc",
    "caps",
    "pep",
    "upload",
    "unread",
    "adhoc",
    "adhoc_admin",
    "abuse",
    "spam_reports",
]


def default_data_dir() -> Path:
    """`$XMPPD_DATA_DIR`, else `$XDG_DATA_HOME/xmppd` (`~/.local/share/xmppd`)."""
    if os.environ.get("XMPPD_DATA_DIR"):
        return Path(os.environ["XMPPD_DATA_DIR"]).expanduser().absolute()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser().absolute() / "xmppd"


def config_search_path() -> list[Path]:
    """Where a config file is looked for when no `-c` is given, in order."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    paths = [Path(xdg).expanduser() / "xmppd" / "xmppd.toml", Path("/etc/xmppd/xmppd.toml")]
    if os.environ.get("XMPPD_CONFIG"):
        paths.insert(0, Path(os.environ["XMPPD_CONFIG"]).expanduser())
    return paths


def find_config() -> Path | None:
    return next((p for p in config_search_path() if p.is_file()), None)


def load(path: str | Path | None = None, *, search: bool = False) -> Config:
    """Read and validate the config file (`None`: built-in defaults, or with `search` the first
    file of `config_search_path()`)."""
    if path is None and search:
        path = find_config()
    text, shown = "", ""
    if path is not None:
        shown = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the config file: {exc.strerror}", path=shown) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError("the config file is not UTF-8", path=shown) from exc
    return parse(text, shown)


# Options naming files: relative values resolve against the config file's folder.
PATH_OPTIONS = (("storage", "path"), ("tls", "certificate"), ("tls", "key"))


def parse(text: str, path: str = "") -> Config:
    source = SourceMap(text, path)
    base_dir = Path(path).absolute().parent if path else Path.cwd()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", path=path) from exc
    known = set(SECTIONS) | {"modules", "hosts"}
    for section in data:
        if section not in known:
            raise source.error(section, f"unknown section; known: {', '.join(sorted(known))}")
    values = {
        name: validate(data.get(name, {}), schema, name, source)
        for name, schema in SECTIONS.items()
    }
    if values["storage"]["driver"] == "postgres" and not values["storage"]["dsn"]:
        raise source.error("storage.dsn", "required when driver = 'postgres'")
    _cluster(values, source)
    for section, key in PATH_OPTIONS:
        values[section][key] = _resolved(values[section][key], base_dir)
    _auth(values["auth"], source, base_dir)
    _login_limits(values["limits"], source)
    check_api(values["api"], source)
    _filter(values["filter"], source)
    _networks(values["metrics"]["allow"], "metrics.allow", source)
    domains = _domains(values["server"], source)
    modules_table = data.get("modules", {})
    if not isinstance(modules_table, dict):
        raise source.error("modules", "expected a table")
    hosts = [
        _host_config(domain, modules_table, data.get("hosts", {}), source) for domain in domains
    ]
    return Config(**values, hosts=hosts, path=path, base_dir=base_dir, source=source)


def _cluster(values: dict[str, Any], source: SourceMap) -> None:
    """Cluster mode: shared storage, a node name, periods the Tracker accepts."""
    cluster = values["cluster"]
    if not cluster["node"]:
        import socket

        cluster["node"] = socket.gethostname()
    if not cluster["enabled"]:
        return
    if values["storage"]["driver"] != "postgres":
        raise source.error(
            "storage.driver",
            "cluster mode needs storage shared by every node: set driver = 'postgres' "
            "(SQLite is one machine's file)",
        )
    if not cluster["redis"] or not all(
        isinstance(u, str) and u.startswith(("redis://", "rediss://", "unix://"))
        for u in cluster["redis"]
    ):
        raise source.error("cluster.redis", "expected redis:// or rediss:// URLs")
    if any(c in cluster["node"] for c in " #:/"):
        raise source.error("cluster.node", "a node name has no spaces, '#', ':' or '/'")
    if cluster["down_period"] < 2 * cluster["heartbeat"]:
        raise source.error("cluster.down_period", "must be at least twice cluster.heartbeat")
    if cluster["permdown_period"] <= cluster["down_period"]:
        raise source.error("cluster.permdown_period", "must be longer than cluster.down_period")


def _resolved(value: str, base_dir: Path) -> str:
    return str(base_dir / Path(value).expanduser()) if value else value


def _auth(auth: dict[str, Any], source: SourceMap, base_dir: Path) -> None:
    """[auth.ldap] is checked against the LDAP backend's schema when that backend is used."""
    _tokens(auth, source, base_dir)
    if auth["backend"] != "ldap":
        return
    from auth.ldap import SCHEMA, settings_problem

    auth["ldap"] = validate(auth["ldap"], SCHEMA, "auth.ldap", source)
    auth["ldap"]["ca_file"] = _resolved(auth["ldap"]["ca_file"], base_dir)
    problem = settings_problem(auth["ldap"])
    if problem:
        key, _, message = problem.partition(": ")
        raise source.error(f"auth.ldap.{key}", message)


def _login_limits(limits: dict[str, Any], source: SourceMap) -> None:
    from .throttle import SCHEMA, exempt_networks

    login = validate(limits["login"], SCHEMA, "limits.login", source)
    try:
        exempt_networks(login["exempt"])
    except ValueError as exc:
        raise source.error("limits.login.exempt", str(exc)) from None
    limits["login"] = login


def _filter(table: dict[str, Any], source: SourceMap) -> None:
    from .wordfilter import compile_rules

    try:
        compile_rules(table["rules"], ignore_case=table["ignore_case"])
    except ValueError as exc:
        name = getattr(exc, "rule", "")
        raise source.error(f"filter.rules.{name}" if name else "filter.rules", str(exc)) from None
def _networks(entries: list[str], key: str, source: SourceMap) -> None:
    from .throttle import exempt_networks

    try:
        exempt_networks(entries)
    except ValueError as exc:
        raise source.error(key, str(exc)) from None


def _tokens(auth: dict[str, Any], source: SourceMap, base_dir: Path) -> None:
    from auth.tokens import load_key, schemas

    tokens_schema, app_schema = schemas()
    tokens = validate(auth["tokens"], tokens_schema, "auth.tokens", source)
    apps = {}
    for name, table in tokens["apps"].items():
        prefix = f"auth.tokens.apps.{name}"
        app = validate(table, app_schema, prefix, source)
        app["key_file"] = _resolved(app["key_file"], base_dir)
        try:
            load_key(app["algorithm"], app["key"], app["key_file"])
        except (OSError, ValueError) as exc:
            raise source.error(prefix, f"unusable key: {exc}") from None
        apps[name] = app
    tokens["apps"] = apps
    auth["tokens"] = tokens


def _domains(server: dict[str, Any], source: SourceMap) -> list[str]:
    domains: list[str] = []
    for key, raw in [("domain", server["domain"])] + [
        ("extra_domains", d) for d in server["extra_domains"]
    ]:
        try:
            domain = prep_domain(raw)
        except JIDError as exc:
            raise source.error(f"server.{key}", f"not a valid domain: {exc}") from exc
        if domain in domains:
            raise source.error(f"server.{key}", f"{domain!r} is listed twice")
        domains.append(domain)
    server["domain"] = domains[0]
    return domains


def _host_config(domain: str, modules: dict[str, Any], hosts: Any, source: SourceMap) -> HostConfig:
    enabled = modules.get("enabled", DEFAULT_MODULES)
    if not isinstance(enabled, list) or not all(isinstance(m, str) for m in enabled):
        raise source.error("modules.enabled", "expected a list of module names")
    options = {k: v for k, v in modules.items() if k != "enabled"}
    override = hosts.get(domain, {}) if isinstance(hosts, dict) else {}
    if override:
        prefix = f"hosts.{domain}"
        if not isinstance(override, dict):
            raise source.error(prefix, "expected a table")
        for key in override:
            if key not in ("modules", "modules_options"):
                raise source.error(f"{prefix}.{key}", "unknown option; known: modules")
        enabled = override.get("modules", enabled)
    return HostConfig(domain=domain, modules=list(enabled), module_options=options)
