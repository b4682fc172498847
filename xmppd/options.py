"""Typed option schemas, shared by the core config and by modules.

A schema is data: `{"key": Option(int, 30, min=1)}`. `validate()` checks a TOML table against
it and reports errors that name the dotted key and the line in the file.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration problem; `str()` names the file, line and key."""

    def __init__(self, message: str, key: str = "", line: int | None = None, path: str = ""):
        self.key, self.line, self.path, self.message = key, line, path, message
        where = path or "config"
        if line:
            where += f":{line}"
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


@dataclass(frozen=True, slots=True)
class Option:
    type: type  # int, float, str, bool or list (of `item`)
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type = str  # element type when type is list

    def check(self, value: Any) -> str | None:
        """None when valid, else a message saying what is wrong."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _is_type(value, self.type):
            return f"expected {_type_name(self.type, self.item)}, got {_describe(value)}"
        if self.type is list:
            for element in value:
                if not _is_type(element, self.item):
                    return f"expected a list of {self.item.__name__}, found {_describe(element)}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.min is not None and value < self.min:
            return f"must be at least {self.min:g}, got {value!r}"
        if self.max is not None and value > self.max:
            return f"must be at most {self.max:g}, got {value!r}"
        return None


Schema = dict[str, Option]


def _is_type(value: Any, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(t: type, item: type) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return f"a list of {item.__name__}" if t is list else names.get(t, t.__name__)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


class SourceMap:
    """Finds the line of a dotted key in TOML source text (tomllib keeps no positions)."""

    _TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")

    def __init__(self, text: str, path: str = "") -> None:
        self.path = path
        self._lines: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            if match := self._TABLE.match(line):
                table = _normalise(match.group(1))
                self._lines.setdefault(table, number)
            elif match := self._KEY.match(line):
                key = _normalise(match.group(1))
                self._lines.setdefault(f"{table}.{key}" if table else key, number)

    def line(self, dotted: str) -> int | None:
        while dotted:
            if dotted in self._lines:
                return self._lines[dotted]
            dotted = dotted.rpartition(".")[0]
        return None

    def error(self, dotted: str, message: str) -> ConfigError:
        return ConfigError(message, dotted, self.line(dotted), self.path)


def _normalise(key: str) -> str:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', key)
    return ".".join(part.strip("\"'") for part in parts)


def validate(table: Any, schema: Schema, prefix: str, source: SourceMap) -> dict[str, Any]:
    """Check one TOML table against a schema; return the values with defaults filled in."""
    if not isinstance(table, dict):
        raise source.error(prefix, f"expected a table, got {_describe(table)}")
    for key in table:
        if key not in schema:
            hint = difflib.get_close_matches(key, list(schema), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            known = ", ".join(sorted(schema)) or "none"
            raise source.error(
                f"{prefix}.{key}", f"unknown option{suggestion}; known options: {known}"
            )
    values: dict[str, Any] = {}
    for key, option in schema.items():
        if key not in table:
            values[key] = option.default
            continue
        problem = option.check(table[key])
        if problem:
            raise source.error(f"{prefix}.{key}", problem)
        value = table[key]
        values[key] = float(value) if option.type is float else value
    return values
