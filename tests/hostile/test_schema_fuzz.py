"""schemathesis against our own OpenAPI schema, through the WSGI app (no server): every operation, with
valid and invalid data, as an authenticated buyer with a real funded escrow in the database. No
response may be a 5xx, and every documented response must match its schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from apps.gateway.tokens import mint_access_token
from escrow_project.wsgi import application
from tests.helpers import create_escrow, pay
from tests.properties.figures import record_figures

schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=30)
CALLS = {"schema_cases": 0, "operations": 0}


@pytest.fixture
def caller(api_client: Any, buyer: Any, seller: Any) -> dict[str, str]:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="75.00")["escrow_id"]
    assert pay(as_buyer, escrow_id).status_code == 202
    CALLS["operations"] += 1
    return {"Authorization": f"Bearer {mint_access_token(buyer)}"}


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_5xx_and_responses_match_the_schema(case: Any, caller: dict[str, str]) -> None:
    CALLS["schema_cases"] += 1
    case.call_and_validate(headers=caller, checks=[not_a_server_error, response_schema_conformance])
    record_figures("hostile_schema", dict(CALLS))
