"""The admin HTTP API under `/api/v1/` on the web listener (docs/api.md).

`keys.py` (API keys, the `[api]` options), `schema.py` (the JSON Schema subset requests are
checked with), `routes.py` (the route table), `service.py` (authentication, limits, dispatch,
the audit log), `openapi.py` (the OpenAPI 3.1 document built from the route table), and one
file of handlers per resource: `users.py`, `rooms.py`, `bans.py`, `system.py`.
"""
