"""Property-based: requests generated from /openapi.json never get a 5xx, and answers match the schema.

Bounded (a few derandomised examples per operation) so that it runs in seconds. Driven through hypothesis
directly: schemathesis' pytest plugin does not support this pytest version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from recengine.api.app import create_app
from recengine.settings import Settings
from tests.api.gateway_helpers import ADMIN_KEY

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_generated_request_yields_a_server_error(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(serving={"engine_timeout_ms": 5000}))
    with TestClient(app):  # runs the lifespan: models, stores and the service exist while cases run
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                headers = {"X-API-Key": ADMIN_KEY} if case.path.startswith("/api/v1/admin") else None
                case.call_and_validate(headers=headers, checks=CHECKS)

            run()
