"""The OpenAPI document is the contract: schemathesis generates requests from it (valid and
invalid ones) against a running server and checks every answer against it (status codes,
content types, schemas, no server errors)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from apisupport import KEYS, start_server
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from support import ServerProcess

from xmppd.api.openapi import build
from xmppd.api.schema import KNOWN, used_keywords

# Refusals of invalid requests: the API's own, plus the web listener's size limits (413, 431).
REJECTIONS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, 431]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
schema = schemathesis.openapi.from_dict(build(), config=CONFIG)


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("xmppd-contract"))
    yield proc
    proc.stop()


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_keeps_the_contract(case: schemathesis.Case, contract_server: ServerProcess):
    base = f"http://127.0.0.1:{contract_server.http_port}"
    # A case generated without credentials (headers negative) is sent without them: adding
    # the key back would make it a valid request that the check then calls "accepted".
    negative = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    headers = {} if negative else {"Authorization": f"Bearer {KEYS['ops'][0]}"}
    # Accounts and rooms are JIDs (RFC 7622: PRECIS profiles, lengths in bytes per part), which
    # no JSON Schema pattern states fully: a schema-valid string may still be refused with
    # 422 naming the field, so "valid data is accepted" is not checked; everything else is.
    skip = [positive_data_acceptance]
    case.call_and_validate(base_url=base, headers=headers, excluded_checks=skip)


def test_served_document_is_the_built_one(contract_server: ServerProcess) -> None:
    url = f"http://127.0.0.1:{contract_server.http_port}/api/openapi.json"
    served = httpx.get(url).json()
    assert served == build()
    assert served["openapi"] == "3.1.0"
    assert len(served["paths"]) >= 20


def test_schemas_use_only_checked_keywords() -> None:
    """The request checker (xmppd/api/schema.py) knows every keyword the document uses, so
    what the document promises to refuse is refused."""
    document = build()
    found: set[str] = set()
    for schema_ in document["components"]["schemas"].values():
        found |= used_keywords(schema_)
    for path in document["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                found |= used_keywords(param["schema"])
            body = op.get("requestBody")
            if body:
                found |= used_keywords(body["content"]["application/json"]["schema"])
    assert found <= KNOWN, found - KNOWN
