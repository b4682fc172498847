"""The route table: each handler declares its method, path, scope, parameters, body and
answers once, and both the dispatcher (service.py) and the OpenAPI document (openapi.py) read
that declaration, so the contract cannot drift from the code."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .schema import Schema

if TYPE_CHECKING:
    from ..server import Server
    from .keys import ApiKey


class ApiError(Exception):
    """An answer other than success: HTTP status, a word, a sentence (and the field at fault)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def not_found(what: str) -> ApiError:
    return ApiError(404, "not-found", what)


@dataclass(slots=True)
class Call:
    """One request as a handler sees it."""

    server: Server
    key: ApiKey
    path: dict[str, str]
    query: dict[str, Any]
    body: Any
    api: Any = None  # the AdminApi (its counters)
    audit: list[str] = field(default_factory=list)  # what changed, for the audit line


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(slots=True)
class Route:
    method: str
    path: str  # under /api/v1, with {name} segments
    scope: str
    summary: str
    handler: Handler
    response: Schema
    status: int = 200
    query: dict[str, Schema] = field(default_factory=dict)
    body: Schema | None = None
    errors: tuple[int, ...] = ()  # besides the ones every route may answer
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        self.pattern = re.compile(f"^{regex}$")

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")


ROUTES: list[Route] = []


def route(
    method: str,
    path: str,
    scope: str,
    summary: str,
    response: Schema,
    **options: Any,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, scope, summary, handler, response, **options))
        return handler

    return register


def obj(required: list[str] | None = None, **properties: Schema) -> Schema:
    """An object schema; `required` lists the mandatory properties."""
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def body_obj(required: list[str] | None = None, **properties: Schema) -> Schema:
    """A request body: unknown fields are refused (422)."""
    return {**obj(required, **properties), "additionalProperties": False}


LIMIT = {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
