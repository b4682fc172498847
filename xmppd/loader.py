"""Finds feature modules, validates their options, loads them onto a host."""

from __future__ import annotations

import importlib
import pkgutil
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import modules as modules_pkg
from .module import Module, ModuleSpec
from .options import ConfigError, SourceMap, validate

if TYPE_CHECKING:
    from .config import Config, HostConfig
    from .host import Host


# Work that needs every module of a host loaded first (the XEP-0115 hash covers all features).
_when_loaded: weakref.WeakKeyDictionary[Host, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def when_loaded(host: Host, callback: Callable[[], None]) -> None:
    """Call `callback` once all modules of `host` are loaded (from a module's `load`)."""
    _when_loaded.setdefault(host, []).append(callback)


def available() -> dict[str, ModuleSpec]:
    """Every module in xmppd/modules that defines `spec`."""
    specs: dict[str, ModuleSpec] = {}
    for info in pkgutil.iter_modules(modules_pkg.__path__):
        mod = importlib.import_module(f"{modules_pkg.__name__}.{info.name}")
        spec = getattr(mod, "spec", None)
        if isinstance(spec, ModuleSpec):
            specs[spec.name] = spec
    return specs


def check(config: Config) -> None:
    """Validate module names and options for every host without loading anything."""
    specs = available()
    for host in config.hosts:
        resolve(host, specs, config.source or SourceMap(""))


def resolve(
    host: HostConfig, specs: dict[str, ModuleSpec], source: SourceMap
) -> list[tuple[ModuleSpec, dict]]:
    for name in host.module_options:
        if name not in specs:
            raise source.error(f"modules.{name}", _unknown(name, specs))
    ordered: list[tuple[ModuleSpec, dict]] = []
    seen: set[str] = set()

    def add(name: str, needed_by: str | None) -> None:
        if name in seen:
            return
        if name not in specs:
            key = "modules.enabled"
            why = f" (needed by {needed_by})" if needed_by else ""
            raise source.error(key, _unknown(name, specs) + why)
        seen.add(name)
        spec = specs[name]
        for dep in spec.depends:
            add(dep, name)
        options = validate(
            host.module_options.get(name, {}), spec.options, f"modules.{name}", source
        )
        ordered.append((spec, options))

    for name in host.modules:
        add(name, None)
    return ordered


def load_all(host: Host, config: Config) -> list[Module]:
    loaded = []
    for spec, options in resolve(host.config, available(), config.source or SourceMap("")):
        module = Module(host, spec, options)
        try:
            spec.load(module)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"module {spec.name!r} failed to load: {exc}", f"modules.{spec.name}"
            ) from exc
        loaded.append(module)
    for callback in _when_loaded.pop(host, []):
        callback()
    return loaded


def _unknown(name: str, specs: dict[str, ModuleSpec]) -> str:
    return f"unknown module {name!r}; available: {', '.join(sorted(specs))}"
