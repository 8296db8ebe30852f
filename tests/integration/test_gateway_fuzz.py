"""Property-based run against the gateway's OpenAPI spec: no 5xx on any generated input.

schemathesis generates requests for every operation from the spec (valid ones
and ones that break it) and sends them to a real `thumbline up` over HTTP.
Every answer (but /v1/sql's) must also be documented: its status, its body
and its headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import Up, start_up, stop, worker_env


@pytest.fixture(scope="module")
async def fuzzed(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Up]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = await worker_env(broker, clean_env, tmp, "fuzz")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    yield up
    stop(up)


def test_no_input_makes_a_server_error(fuzzed: Up) -> None:
    base = fuzzed.info.gateway_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/feedback",
        "/v1/traces",
        "/v1/sql",
        "/otlp/v1/traces",
    }
    for operation in operations:
        # /v1/sql: no 5xx only, until its spec documents its errors
        checks = [not_a_server_error] if operation.path == "/v1/sql" else AS_DOCUMENTED
        fuzz(base, operation, checks)


AS_DOCUMENTED = [
    not_a_server_error, status_code_conformance, response_schema_conformance,
    response_headers_conformance,
]  # fmt: skip


def fuzz(base: str, operation: Any, checks: list[Any]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
              database=None, derandomize=True)  # fmt: skip
    def answered_as_documented(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=30)
        case.validate_response(response, checks=checks)

    answered_as_documented()
