"""A fuzz pass over the OpenAPI schema (schemathesis + hypothesis): no input may produce a server
error. Bounded: a fixed number of derandomized examples per operation."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.ray
EXAMPLES = 40


def test_no_input_produces_a_server_error(service):
    client, _, _ = service
    base = str(client.base_url)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=base, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /v1/transform", "POST /v1/embeddings", "GET /v1/versions"} <= set(checked)
