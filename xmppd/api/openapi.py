"""The OpenAPI 3.1 document of the admin API, built from the route table (routes.py): every
route, parameter, body, answer and error as the dispatcher (service.py) implements them."""

from __future__ import annotations

from typing import Any

from .. import __version__
from . import bans, filter_rules, hooks, rooms, system, users  # noqa: F401  (register their routes)
from .routes import ROUTES, Route
from .schema import COMPONENTS, ref

PREFIX = "/api/v1"
# Answers any route may give; with a body or parameters, the ones about them too.
ALWAYS = {
    401: "no key, or an unknown one (WWW-Authenticate: Bearer)",
    403: "the address is outside api.allow, or the key lacks the route's scope",
    422: "a parameter (an unknown one too) or body field is invalid; `field` names it",
    429: "the key's request rate is exceeded (Retry-After)",
    500: "a bug (logged with its traceback)",
    503: "the database is unavailable",
    504: "the request took longer than api.request_timeout",
}
WITH_BODY = {
    400: "the body is not JSON",
    413: "the body is larger than api.max_body_bytes",
    415: "the body is not application/json",
}
SPECIFIC = {404: "no such object", 409: "a conflict with the current state (details in error)"}
SUCCESS = {200: "done", 201: "created", 204: "done"}


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": _json({"type": "object"}),
                    },
                    "403": _error(ALWAYS[403]),
                },
            }
        }
    }
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xmppd admin API",
            "version": __version__,
            "description": "Administration of an xmppd server over HTTP (docs/api.md). Every "
            "change is logged with the key's name. Scopes: read, users, rooms, moderation, "
            "post, admin (admin includes every other).",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": f"Scope: `{route.scope}` (or `admin`).",
        "x-scope": route.scope,
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in route.params
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in route.query.items()
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        required = body_required(route)
        op["requestBody"] = {"required": required, "content": _json(route.body)}
    responses: dict[str, Any] = {}
    if route.status == 204:
        responses["204"] = {"description": SUCCESS[204]}
    else:
        responses[str(route.status)] = {
            "description": SUCCESS[route.status],
            "content": _json(route.response),
        }
    errors = dict(ALWAYS)
    if route.body is not None:
        errors.update(WITH_BODY)
    errors.update({status: SPECIFIC[status] for status in route.errors})
    for status in sorted(errors):
        responses[str(status)] = _error(errors[status])
    if "413" in responses:  # beyond http.max_body_bytes the web listener answers first
        responses["413"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    responses["431"] = {  # answered by the web listener before the API sees the request
        "description": "the request line and headers exceed http.max_header_bytes",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    op["responses"] = responses
    return op


def body_required(route: Route) -> bool:
    """A body with required fields must be sent; one without may be left out (`{}`)."""
    schema = route.body or {}
    if "$ref" in schema:
        schema = COMPONENTS[schema["$ref"].rpartition("/")[2]]
    return bool(schema.get("required"))


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(ref("Error"))}
