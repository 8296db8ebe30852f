"""The gateway's error answers: one body shape, and what each status means on each route.

Every error the gateway answers is a JSON object with ``error`` (what went
wrong and what to do); a 429 or a 503 also carries ``"retriable": true`` and
a ``Retry-After`` header. :func:`responses` turns a route's statuses into the
OpenAPI ``responses`` FastAPI documents.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from thumbline.schemas.wire import MAX_BATCH_EVENTS


class Error(BaseModel):
    """An error answer: what went wrong, and what to do."""

    error: str = Field(description="What went wrong, naming the field or setting, and what to do.")


class RetryLater(Error):
    """A 429 or a 503: the same request may succeed after ``Retry-After`` seconds."""

    retriable: bool = Field(description="Always true: send the same request again later.")


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


_SHAPES: dict[int, dict[str, Any]] = {
    401: {"headers": {"WWW-Authenticate": _header("Bearer")}},
    429: {"model": RetryLater, "headers": {"Retry-After": _header("Seconds to wait.")}},
    503: {"model": RetryLater, "headers": {"Retry-After": _header("Seconds to wait.")}},
}

NO_KEY = (
    "No API key (Authorization: Bearer tl_... or X-API-Key), or an unknown, wrong or revoked "
    "one. Without a key only while none exists and the gateway listens on loopback."
)

INGEST: dict[int, str] = {
    400: "The body is not JSON.",
    401: NO_KEY,
    403: "The key's scope is read: it cannot ingest.",
    413: "The body is over THUMBLINE_GATEWAY_MAX_BODY_BYTES, or the batch over "
    f"{MAX_BATCH_EVENTS:,} items.",
    422: "No item was accepted: a result per item with its reason (IngestResult), or the batch "
    "is empty (Error).",
    429: "The key is over THUMBLINE_GATEWAY_RATE_LIMIT events a second.",
    503: "Kafka did not acknowledge the events within THUMBLINE_GATEWAY_ACK_TIMEOUT_SECONDS: they "
    "may still land; send the same events again (their event ids keep it to one row). Or the "
    "key store did not answer.",
}


def responses(codes: dict[int, str], *, per_item: type[BaseModel] | None = None) -> dict[
    int | str, dict[str, Any]
]:  # fmt: skip
    """OpenAPI responses for these error statuses, each described for its route.

    Args:
        codes: status -> what it means on this route.
        per_item: the model of a 422 that may also be a result per item.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code, description in codes.items():
        entry = {"model": Error, **_SHAPES.get(code, {}), "description": description}
        if code == 422 and per_item is not None:
            entry["model"] = per_item | Error
        out[code] = entry
    return out
