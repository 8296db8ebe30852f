"""The score-config routes are in the gateway's OpenAPI spec with their bodies and errors."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics
from thumbline.producers.gateway import build_app


def spec_with(score_sql: object) -> dict:
    app = build_app(
        producer=SimpleNamespace(), keys=SimpleNamespace(), reads=SimpleNamespace(),  # type: ignore[arg-type]
        sql=SimpleNamespace(),  # type: ignore[arg-type]
        database="db", host="127.0.0.1", metrics=Metrics(CollectorRegistry()),
        score_sql=score_sql,  # type: ignore[arg-type]
    )  # fmt: skip
    return app.openapi()


def test_the_spec_documents_listing_putting_and_deleting_score_configs():
    paths = spec_with(lambda sql, write: b"")["paths"]
    listing = paths["/v1/score-configs"]["get"]
    assert {"401", "403", "503"} <= set(listing["responses"])
    put = paths["/v1/score-configs/{name}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["kind"]["enum"] == ["rating", "score", "thumb", "bool", "category"]
    assert {"bad_at_most", "good_at_least", "categories", "range"} <= set(body["properties"])
    assert {"401", "403", "413", "422", "503"} <= set(put["responses"])
    delete = paths["/v1/score-configs/{name}"]["delete"]
    assert "404" in delete["responses"]


def test_a_gateway_without_a_way_to_the_store_has_no_score_config_routes():
    assert "/v1/score-configs" not in spec_with(None)["paths"]
