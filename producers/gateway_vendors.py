"""Hosted products' own ingest paths: moving to thumbline is a change of base URL and key.

- **Axiom** (the ``axiom/ai`` SDK's ``createFeedbackClient({url, dataset, token})``):
  ``POST /v1/datasets/{dataset}/ingest`` and, for an ``edgeUrl``,
  ``POST /v1/ingest/{dataset}``; one flat feedback event (or an array) per request,
  mapped by :mod:`thumbline.schemas.shapes_axiom`. The dataset's name is kept in
  ``metadata.axiom_dataset``. The SDK only reads ``response.ok``; the answer also
  carries Axiom's ``ingested`` / ``failed`` counts.
- **Braintrust** REST API: ``POST /v1/project_logs/{project_id}/feedback``
  (``{"feedback": [...]}``, answered ``"status": "success"`` when all were taken) and
  ``POST /v1/project_logs/{project_id}/insert`` (``{"events": [...]}``: spans that
  carry ``scores``, such as the ``user_feedback`` child spans of Braintrust's
  multi-rater pattern; answered with ``row_ids``), mapped by
  :mod:`thumbline.schemas.shapes_braintrust`. The project id is kept in
  ``metadata.braintrust_project``; thumbline's project comes from the key.
- **A trace's attributes** (seed 001's PATCH of a trace): ``PATCH
  /v1/traces/{trace_id}`` and ``PATCH /v1/traces/{trace_id}/spans/{span_id}``,
  mapped by the ``attributes`` shape.

Every route is the gateway's ingest: the product's ``Authorization: Bearer``
header carries a thumbline ingest key, the body is bounded, each item gets its
result (202, 207 or 422 with ``IngestResult``), the key's rate limit applies and
the server stamps the project, the time and the annotator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from thumbline.producers.gateway_errors import INGEST, responses
from thumbline.schemas.shapes import trace_update
from thumbline.schemas.shapes_axiom import axiom
from thumbline.schemas.shapes_braintrust import (
    braintrust,
    braintrust_feedback_items,
    braintrust_insert,
    braintrust_insert_items,
)

Fields = dict[str, Any]
Mapping = Callable[[Any], list[Fields]]


class _Result(Protocol):
    accepted: int
    rejected: int
    results: list[Any]


class Ingest(Protocol):
    """The gateway's ingest (:func:`thumbline.producers.gateway.build_app`)."""

    def __call__(
        self,
        request: Request,
        kind: Any,
        prepare: Any,
        items_of: Callable[[Any], list[Any]] | None = None,
        answer: Callable[[list[Any], Any], dict[str, Any]] | None = None,
    ) -> Awaitable[Response]: ...


def with_metadata(mapping: Mapping, **extra: str) -> Mapping:
    """``mapping``, with ``extra`` added to every event's metadata (where it came from)."""

    def mapped(item: Any) -> list[Fields]:
        return [
            {**fields, "metadata": {**(fields.get("metadata") or {}), **extra}}
            for fields in mapping(item)
        ]

    return mapped


def row_ids(items: list[Any], result: _Result) -> list[str | None]:
    """Braintrust's ``row_ids``, one per event sent: its ``id``, else the first event id."""
    ids: list[str | None] = []
    for item, outcome in zip(items, result.results, strict=True):
        sent = item.get("id") if isinstance(item, dict) else None
        ids.append(str(sent) if sent is not None else next(iter(outcome.event_ids), None))
    return ids


def add_vendor_routes(
    app: FastAPI,
    *,
    ingest: Ingest,
    feedback: Callable[[Mapping], Any],
    result: type[BaseModel],
) -> None:
    """Add the hosted products' paths; ``feedback(mapping)`` prepares mapped items."""
    errors = responses(INGEST, per_item=result)
    documented: dict[str, Any] = {
        "status_code": 202, "response_model": result,
        "responses": {207: {"model": result}, **errors},
    }  # fmt: skip

    def axiom_counts(items: list[Any], outcome: _Result) -> dict[str, Any]:
        return {"ingested": outcome.accepted, "failed": outcome.rejected}

    async def axiom_ingest(dataset: str, request: Request) -> Response:
        mapping = with_metadata(axiom, axiom_dataset=dataset)
        return await ingest(request, "feedback", feedback(mapping), answer=axiom_counts)

    app.post("/v1/datasets/{dataset}/ingest", summary="Axiom AI SDK feedback", **documented)(
        axiom_ingest
    )
    app.post("/v1/ingest/{dataset}", summary="Axiom AI SDK feedback (edge URL)", **documented)(
        axiom_ingest
    )

    @app.post("/v1/project_logs/{project_id}/feedback", summary="Braintrust feedback",
              **documented)  # fmt: skip
    async def braintrust_feedback(project_id: str, request: Request) -> Response:
        """``{"feedback": [{id, scores, expected, comment, metadata, tags, source}]}``."""
        mapping = with_metadata(braintrust, braintrust_project=project_id)

        def success(items: list[Any], outcome: _Result) -> dict[str, Any]:
            return {"status": "success"} if not outcome.rejected else {}

        return await ingest(request, "feedback", feedback(mapping),
                            items_of=braintrust_feedback_items, answer=success)  # fmt: skip

    @app.post("/v1/project_logs/{project_id}/insert", summary="Braintrust spans with scores",
              **documented)  # fmt: skip
    async def braintrust_spans(project_id: str, request: Request) -> Response:
        """``{"events": [...]}``: each span's ``scores`` are feedback on its parent span."""
        mapping = with_metadata(braintrust_insert, braintrust_project=project_id)

        def inserted(items: list[Any], outcome: _Result) -> dict[str, Any]:
            return {"row_ids": row_ids(items, outcome)}

        return await ingest(request, "feedback", feedback(mapping),
                            items_of=braintrust_insert_items, answer=inserted)  # fmt: skip

    @app.patch("/v1/traces/{trace_id}", summary="Feedback attributes of a trace", **documented)
    async def patch_trace(trace_id: str, request: Request) -> Response:
        """``{attributes: {user_feedback, user_feedback_rating, ...}, tags}``."""
        return await ingest(request, "feedback", feedback(partial(trace_update, trace_id, None)))

    @app.patch("/v1/traces/{trace_id}/spans/{span_id}", summary="Feedback attributes of a span",
               **documented)  # fmt: skip
    async def patch_span(trace_id: str, span_id: str, request: Request) -> Response:
        """The same attributes, about one span of the trace."""
        mapping = partial(trace_update, trace_id, span_id)
        return await ingest(request, "feedback", feedback(mapping))
