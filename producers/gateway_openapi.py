"""The gateway's OpenAPI spec: FastAPI's, plus the request bodies the handlers read themselves.

The ingest routes read their bodies raw (one event or a batch, a hosted
product's shape, OTLP), so FastAPI cannot see them; this adds them, and drops
FastAPI's own 422 body where every 422 is ours (``{"error": ...}``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from thumbline.schemas import FeedbackEvent, TraceEvent
from thumbline.schemas.shapes import SHAPES
from thumbline.schemas.wire import MAX_BATCH_EVENTS


def openapi_of(app: FastAPI) -> dict[str, Any]:
    """The spec of ``app`` (built once, then cached on it)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes)  # fmt: skip
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (FeedbackEvent, TraceEvent):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema

    def one_or_many(name: str) -> dict[str, Any]:
        one = {"$ref": f"#/components/schemas/{name}"}
        many = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_BATCH_EVENTS}
        body = {"schema": {"oneOf": [one, many]}}
        return {"required": True, "content": {"application/json": body}}

    paths = spec["paths"]
    paths["/v1/feedback"]["post"]["requestBody"] = one_or_many("FeedbackEvent")
    paths["/v1/traces"]["post"]["requestBody"] = one_or_many("TraceEvent")
    shaped = paths["/v1/feedback/{shape}"]["post"]
    shaped["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    shaped["parameters"][0]["schema"] = {"type": "string", "enum": sorted(SHAPES)}
    # FastAPI documents a 422 wherever a route has parameters; a str in the path cannot fail
    for path in ("/v1/traces/{trace_id}", "/v1/conversations/{conversation_id}"):
        paths[path]["get"]["responses"].pop("422", None)
    if b"HTTPValidationError" not in orjson.dumps(paths):  # every 422 is ours: {"error"}
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    paths["/otlp/v1/traces"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
    paths["/v1/sql"]["post"]["requestBody"] = {
        "required": True, "content": {"text/plain": {"schema": {"type": "string"}}},
    }  # fmt: skip
    app.openapi_schema = spec
    return spec
