"""The gateway's OpenAPI spec documents every error it answers, broker-free."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics
from thumbline.producers.gateway import build_app

INGEST = {"400", "401", "403", "413", "422", "429", "503"}
ROUTES = {  # (method, path): the error statuses the route answers
    ("post", "/v1/feedback"): INGEST,
    ("post", "/v1/traces"): INGEST,
    ("post", "/v1/feedback/{shape}"): INGEST | {"404"},
    ("get", "/v1/feedback"): {"401", "403", "422", "503"},  # 503: the store did not answer
    ("get", "/v1/traces/{trace_id}"): {"401", "403", "404", "503"},
    ("get", "/v1/conversations/{conversation_id}"): {"401", "403", "404", "503"},
    # the web pages' reads (gateway_charts)
    ("get", "/v1/whoami"): {"401", "403", "503"},
    ("get", "/v1/rates"): {"401", "403", "422", "503"},
    ("get", "/v1/alerts"): {"401", "403", "422", "503"},
    # hosted products' own paths (gateway_vendors)
    ("post", "/v1/datasets/{dataset}/ingest"): INGEST,
    ("post", "/v1/ingest/{dataset}"): INGEST,
    ("post", "/v1/project_logs/{project_id}/feedback"): INGEST,
    ("post", "/v1/project_logs/{project_id}/insert"): INGEST,
    ("patch", "/v1/traces/{trace_id}"): INGEST,
    ("patch", "/v1/traces/{trace_id}/spans/{span_id}"): INGEST,
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    app = build_app(
        producer=SimpleNamespace(), keys=SimpleNamespace(), reads=SimpleNamespace(),  # type: ignore[arg-type]
        sql=SimpleNamespace(),  # type: ignore[arg-type]
        database="db", host="127.0.0.1", metrics=Metrics(CollectorRegistry()),
    )  # fmt: skip
    return app.openapi()


def schemas_of(spec: dict[str, Any], response: dict[str, Any]) -> set[str]:
    """The component names a response's JSON body may be."""
    schema = response["content"]["application/json"]["schema"]
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return {option["$ref"].rsplit("/", 1)[1] for option in options}


def test_the_error_body_is_an_object_with_error_and_retriable_where_sent(spec):
    components = spec["components"]["schemas"]
    assert components["Error"]["required"] == ["error"]
    assert components["Error"]["properties"]["error"]["type"] == "string"
    retry = components["RetryLater"]
    assert set(retry["required"]) == {"error", "retriable"}
    assert retry["properties"]["retriable"]["type"] == "boolean"


@pytest.mark.parametrize(("method", "path"), list(ROUTES))
def test_every_route_documents_the_errors_it_answers(spec, method, path):
    responses = spec["paths"][path][method]["responses"]
    assert {code for code in responses if code >= "400"} == ROUTES[(method, path)]
    for code in ROUTES[(method, path)]:
        assert responses[code]["description"], code
        body = schemas_of(spec, responses[code])
        if code in ("429", "503"):
            assert body == {"RetryLater"}
            assert "Retry-After" in responses[code]["headers"]
        elif code == "422" and method in ("post", "patch"):
            assert body == {"IngestResult", "Error"}  # per item results, or an empty batch
        else:
            assert body == {"Error"}
        if code == "401":
            assert "WWW-Authenticate" in responses[code]["headers"]


def test_readiness_documents_its_503_and_the_sql_route_is_still_there(spec):
    assert schemas_of(spec, spec["paths"]["/readyz"]["get"]["responses"]["503"]) == {"Error"}
    assert "post" in spec["paths"]["/v1/sql"]


def test_the_trace_body_documents_the_question_the_answer_and_their_limit(spec):
    fields = spec["components"]["schemas"]["TraceEvent"]["properties"]
    assert "16,000 characters" in fields["input"]["description"]
    assert "truncated by thumbline" in fields["input"]["description"]
    assert "16,000 characters" in fields["output"]["description"]
