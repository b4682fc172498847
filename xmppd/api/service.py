"""The admin API's front door: address allow-list, key check, scope, rate, body size and time
limits, request validation, dispatch, JSON answers, and one audit line per change.

Every refusal is JSON `{"error", "message"}` with its HTTP status: 401 without a known key
(with `WWW-Authenticate: Bearer`), 403 for an address outside `api.allow` or a key without the
route's scope, 404 for an unknown route or object, 405, 413, 415, 422 (the field at fault),
429 (with `Retry-After`), 504 past `api.request_timeout`. The API is off (every path 404)
while no key is configured.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import trio

from .. import reload
from ..ratelimit import TokenBucket
from ..storage.base import StorageError
from . import bans, filter_rules, hooks, rooms, system, users  # noqa: F401  (register their routes)
from .keys import ApiKey, find_key
from .openapi import body_required
from .routes import ROUTES, ApiError, Call, Route
from .schema import COMPONENTS, Invalid, check

if TYPE_CHECKING:
    from ..server import Server
    from ..transports.http import Request

log = logging.getLogger("xmppd.api")
audit_log = logging.getLogger("xmppd.api.audit")
PREFIX = "/api/v1"
OPENAPI_PATH = "/api/openapi.json"
JSON_TYPE = "application/json"

reload.live("api")  # keys, allow list and rates change on SIGHUP


class AdminApi:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.config.api
        self.keys: dict[str, ApiKey] = self.settings["keys"]
        self.allow = [ipaddress.ip_network(n, strict=False) for n in self.settings["allow"]]
        self.buckets: dict[str, TokenBucket] = {}
        self.counter = system.MessageCounter()
        self._document: bytes | None = None
        self._counting = False
        if self.keys:
            self._start_counting()
        server.events.hook("config-reloaded", self._reloaded)

    def _start_counting(self) -> None:
        if not self._counting:
            self._counting = True
            self.counter.install(self.server)

    async def _reloaded(self, event: Any) -> None:
        """SIGHUP (xmppd/reload.py): keys, addresses and rates apply to the next request."""
        if "api" not in {key.split(".")[0] for key in event.changed}:
            return
        self.keys = self.settings["keys"]
        self.allow = [ipaddress.ip_network(n, strict=False) for n in self.settings["allow"]]
        self.buckets.clear()
        if self.keys:
            self._start_counting()
        log.info("admin API: %d key(s) after the reload", len(self.keys))

    async def handle(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            if not self.keys:
                raise ApiError(404, "not-found", "the admin API is off (no key in [api.keys])")
            self._check_address(request.peer)
            if request.path == OPENAPI_PATH:
                if request.method != "GET":
                    raise ApiError(405, "method-not-allowed", "use GET", headers=[("Allow", "GET")])
                return 200, [("Content-Type", JSON_TYPE)], self.document()
            route, params = self._find(request.method, request.path)
            key = self._authenticate(request, route)
            call = Call(self.server, key, params, self._query(route, request), None, self)
            call.body = self._body(route, request)
            with trio.fail_after(self.settings["request_timeout"]):
                result = await route.handler(call)
        except ApiError as exc:
            return self._error(exc)
        except trio.TooSlowError:
            return self._error(ApiError(504, "timeout", "the request took too long"))
        except StorageError as exc:
            log.error("API %s %s: storage: %s", request.method, request.path, exc)
            return self._error(ApiError(503, "storage-unavailable", "the database is unavailable"))
        except Exception:
            log.exception("API %s %s failed", request.method, request.path)
            return self._error(ApiError(500, "internal", "the request failed; see the server log"))
        if route.method != "GET":
            detail = "; ".join(call.audit) or json.dumps(params, sort_keys=True)
            audit_log.info("key=%s %s %s: %s", key.name, route.method, request.path, detail)
        body = b"" if route.status == 204 else json.dumps(result).encode()
        return route.status, [("Content-Type", JSON_TYPE)], body

    def document(self) -> bytes:
        if self._document is None:
            from .openapi import build

            self._document = json.dumps(build(), indent=1).encode()
        return self._document

    # ---- the checks, in order -----------------------------------------------------------

    def _check_address(self, peer: str) -> None:
        try:
            address = ipaddress.ip_address(peer.partition("%")[0])
        except ValueError:
            address = None
        if address is None or not any(address in net for net in self.allow):
            log.warning("refused an API request from %s (not in api.allow)", peer)
            raise ApiError(403, "address-not-allowed", "this address may not use the API")

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        if not path.startswith(PREFIX + "/"):
            raise ApiError(404, "not-found", f"no such route; the API lives under {PREFIX}/")
        rest = path[len(PREFIX) :]
        allowed = []
        for route in ROUTES:
            match = route.pattern.match(rest)
            if match is None:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route.method)
        if allowed:
            methods = ", ".join(sorted(allowed))
            allow = [("Allow", methods)]
            raise ApiError(405, "method-not-allowed", f"use {methods}", headers=allow)
        raise ApiError(404, "not-found", "no such route (see /api/openapi.json)")

    def _authenticate(self, request: Request, route: Route) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        key = find_key(self.keys, presented.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            log.warning("refused an API request from %s: no valid key", request.peer)
            raise ApiError(401, "unauthorized", "send a valid key as Authorization: Bearer <key>")
        if not key.allows(route.scope):
            raise ApiError(
                403, "forbidden", f"the key {key.name!r} lacks the scope {route.scope!r}"
            )
        bucket = self.buckets.get(key.name)
        now = time.monotonic()
        if bucket is None:
            rate = self.settings["requests_per_second"]
            bucket = self.buckets[key.name] = TokenBucket(rate, self.settings["burst"], now)
        if not bucket.allow(now):
            rate = self.settings["requests_per_second"]
            raise ApiError(429, "rate-limited", f"more than {rate:g} requests per second")
        return key

    def _query(self, route: Route, request: Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in parse_qsl(request.query, keep_blank_values=True):
            schema = route.query.get(name)
            if schema is None:  # a typo must not silently widen a query
                raise ApiError(422, "invalid", "unknown parameter", name)
            values[name] = _typed(name, raw, schema)
        for name, schema in route.query.items():
            if name not in values and "default" in schema:
                values[name] = schema["default"]
        return values

    def _body(self, route: Route, request: Request) -> Any:
        if route.body is None:
            return None
        limit = self.settings["max_body_bytes"]
        if len(request.body) > limit:
            raise ApiError(413, "too-big", f"the body is limited to {limit} bytes")
        if not request.body.strip():
            if body_required(route):
                raise ApiError(422, "invalid", "a JSON body is required")
            return {}
        kind = request.headers.get("content-type", JSON_TYPE).partition(";")[0].strip().lower()
        if kind != JSON_TYPE:
            raise ApiError(415, "unsupported-media-type", "send application/json")
        try:
            body = json.loads(request.body, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, "bad-json", f"the body is not JSON: {exc}") from None
        try:
            check(body, route.body, COMPONENTS)
        except Invalid as exc:
            raise ApiError(422, "invalid", exc.message, exc.field) from None
        return body

    def _error(self, exc: ApiError) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [("Content-Type", JSON_TYPE), *exc.headers]
        if exc.status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="xmppd"'))
        if exc.status == 429:
            rate = self.settings["requests_per_second"]
            headers.append(("Retry-After", str(max(1, math.ceil(1 / rate)))))
        return exc.status, headers, json.dumps(exc.body()).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _typed(name: str, raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    value: Any = raw
    if kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(422, "invalid", "expected an integer", name) from None
    elif kind == "boolean":
        if raw not in ("true", "false"):
            raise ApiError(422, "invalid", "expected true or false", name)
        value = raw == "true"
    try:
        check(value, schema, COMPONENTS, name)
    except Invalid as exc:
        raise ApiError(422, "invalid", exc.message, exc.field) from None
    return value
