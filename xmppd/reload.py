"""SIGHUP: re-read the config file, apply what can change live, say what needs a restart.

The file is read and validated like at start-up (errors name the key and the line); a file
that does not validate is refused as a whole and the running configuration stays. Otherwise
every changed key is either *live* (in `LIVE`: written into the running `Config` in place and
applied now) or needs a restart (kept at its running value, and listed in the log).

Live here: `server.log_level`, `log.format`, `metrics.enabled`, `metrics.allow`, the login
throttle (`limits.login.*`, at once), the byte rate of c2s connections (`limits.bytes_per_second`,
`limits.burst_bytes`: open connections too), and the web message rate
(`http.messages_per_second`: sessions opened after the reload). Other features make their own
keys live: they add them with `live("section.key")` and apply them in a `config-reloaded`
handler, fired on the server's bus and on every host's with a `ConfigReloaded` payload
(xmppd/events.py) after the new values are in place.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from . import loader, logformat, metrics, systemd
from .config import SECTIONS, Config, load
from .events import ConfigReloaded
from .options import ConfigError

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("xmppd")

LIVE: set[str] = {
    "server.log_level",
    "log.format",
    "metrics.enabled",
    "metrics.allow",
    "limits.login",
    "limits.bytes_per_second",
    "limits.burst_bytes",
    "http.messages_per_second",
    "filter.rules",  # the word filter (xmppd/server.py)
}
NESTED = {("limits", "login"), ("auth", "tokens"), ("auth", "ldap")}  # tables, compared by key


def live(*keys: str) -> None:
    """Declare keys (or whole tables: "api", "bans.default") applied by a reload handler."""
    LIVE.update(keys)


def is_live(key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:n]) in LIVE for n in range(1, len(parts) + 1))


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the options whose values differ (module lists and options: `modules`)."""
    changed = []
    for section in SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for key in sorted(set(before) | set(after)):
            a, b = before.get(key), after.get(key)
            if (section, key) in NESTED and isinstance(a, dict) and isinstance(b, dict):
                changed += [
                    f"{section}.{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                ]
            elif a != b:
                changed.append(f"{section}.{key}")
    if [vars_of(h) for h in old.hosts] != [vars_of(h) for h in new.hosts]:
        changed.append("modules")
    return changed


def vars_of(host: Any) -> tuple:
    return (host.domain, host.modules, host.module_options)


async def reload(server: Server) -> bool:
    """Reload `server.config.path`; True when the new file was accepted."""
    running = server.config
    if not running.path:
        log.warning("reload: running on built-in defaults (no config file); nothing to read")
        return False
    systemd.reloading()
    try:
        new = load(running.path)
        loader.check(new)  # module options, as at start-up
        if running.cluster.get("worker"):  # `serve --workers`: this worker's node name
            from .workers import worker_config

            worker_config(new, running.cluster["worker"])
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        systemd.ready("serving (the last reload was refused: see the log)")
        return False
    changed = changed_keys(running, new)
    applied = [k for k in changed if is_live(k)]
    restart = [k for k in changed if not is_live(k)]
    # Said before a new log level applies: the line is written at the level it replaces.
    if applied:
        log.info("configuration reloaded from %s: applied %s", running.path, ", ".join(applied))
    else:
        log.info("configuration reloaded from %s: no live option changed", running.path)
    if restart:
        log.warning("changed in %s but needing a restart: %s", running.path, ", ".join(restart))
    for key in applied:
        _write(running, new, key)
    _apply_builtin(server, set(applied))
    event = ConfigReloaded(running, new, frozenset(applied))
    for bus in (server.events, *(host.events for host in server.hosts.values())):
        with contextlib.suppress(Exception):  # logged by the bus; the other handlers still run
            await bus.fire("config-reloaded", event)
    systemd.ready("serving")
    return True


def _write(running: Config, new: Config, key: str) -> None:
    """Copy one changed value into the running config, in place (holders of a section see it)."""
    section, name, *rest = key.split(".")
    target, source = getattr(running, section), getattr(new, section)
    if rest:
        target, source, name = target[name], source[name], rest[0]
    if name in source:
        target[name] = source[name]
    else:
        target.pop(name, None)


def _apply_builtin(server: Server, applied: set[str]) -> None:
    config = server.config
    if applied & {"server.log_level", "log.format"}:
        logformat.apply(config.server["log_level"], config.log["format"])
    if any(k.startswith("limits.login.") for k in applied):
        server.login_throttle.reconfigure(config.limits["login"])
    if "metrics.enabled" in applied:
        metrics.configure(config.metrics["enabled"])
