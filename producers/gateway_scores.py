"""The gateway's score-config routes: list (read keys), put and delete (admin keys).

``GET /v1/score-configs`` lists the configs in force (``?history=true``: every
version, deleted ones included); a key bound to a project sees only its own.
``PUT /v1/score-configs/{name}`` stores a config as a new version where it
changed, ``DELETE`` ends one with a deleted version: both need an admin key, and
an admin key bound to a project (older versions made them) changes only its
project. The join reads the configs in force every ``THUMBLINE_SCORE_CONFIGS_SECONDS``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from thumbline.keys import ApiKey
from thumbline.producers.gateway_core import GatewayCore
from thumbline.producers.gateway_errors import NO_KEY, responses
from thumbline.producers.gateway_reads import own_project
from thumbline.schemas import InvalidEvent
from thumbline.schemas.score_configs import ScoreConfig
from thumbline.score_configs import Sql, delete_config, list_configs, put_config

#: The largest body of a PUT: a config is small (200 categories fit many times over).
MAX_CONFIG_BYTES = 64 * 1024


class ScoreConfigBody(BaseModel):
    """The body of a PUT: the config's fields (its name is the path's)."""

    kind: Literal["rating", "score", "thumb", "bool", "category"]
    project: str | None = Field(None, description="Default: the key's project, else 'default'.")
    range: tuple[float, float] | None = Field(None, description="[low, high] of a rating/score.")
    bad_at_most: float | None = Field(None, description="Values up to this are bad.")
    good_at_least: float | None = Field(None, description="Values from this are good.")
    categories: dict[str, str] = Field(
        default_factory=dict, description="category -> label (good, bad, neutral or custom)."
    )
    description: str = ""
    one_vote_per_user: bool = False


class StoredScoreConfig(BaseModel):
    """One version of a config; ``config`` is null for a deleted version."""

    project: str
    name: str
    version: int
    deleted: bool
    created_at: datetime | None = None
    config: ScoreConfig | None = None


class PutResult(BaseModel):
    config: ScoreConfig
    changed: bool = Field(description="false: the config in force already said this.")


class DeleteResult(BaseModel):
    project: str
    name: str
    version: int = Field(description="The deleted version that ends the config.")


WRITE_ERRORS = {
    401: NO_KEY,
    403: "The key's scope is not admin, or it is bound to another project.",
    413: f"The body is over {MAX_CONFIG_BYTES:,} bytes.",
    503: "The store did not answer: try again later.",
}


def _project(key: ApiKey | None, asked: str | None) -> str:
    """The project a write covers: the one asked (default 'default'), within the key's."""
    if key is not None and key.project:
        if asked is not None and asked != key.project:
            raise HTTPException(403, f"this key changes only project {key.project!r}")
        return key.project
    return asked or "default"


def add_score_routes(app: FastAPI, core: GatewayCore, *, sql: Sql, database: str) -> None:
    """Add the score-config routes; ``sql`` reaches the store (blocking: run in threads)."""

    @app.get("/v1/score-configs", response_model=list[StoredScoreConfig],
             responses=responses({401: NO_KEY, 403: "The key's scope is ingest, or it asks "
                                  "for another project than its own.",
                                  422: "history is not true or false.",
                                  503: "The store did not answer: try again later."}))  # fmt: skip
    async def get_score_configs(
        request: Request,
        project: str | None = None,
        history: Annotated[bool, Query(description="Every version, deleted ones too.")] = False,
    ) -> list[StoredScoreConfig]:
        """The score configs in force (the newest version of each name), or their history."""
        key = await core.authenticate(request, "read")
        scope = own_project(key, project)
        found = await asyncio.to_thread(list_configs, sql, database, history=history, project=scope)
        return [
            StoredScoreConfig(project=c.project, name=c.name, version=c.version,
                              deleted=c.config is None, created_at=c.created_at, config=c.config)
            for c in found
        ]  # fmt: skip

    body_schema = ScoreConfigBody.model_json_schema()

    @app.put("/v1/score-configs/{name}", response_model=PutResult,
             responses=responses({**WRITE_ERRORS, 400: "The body is not JSON.",
                                  422: "The config is invalid: the error names the field."}),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": body_schema}}}})  # fmt: skip
    async def put_score_config(
        name: str, request: Request, project: str | None = None
    ) -> PutResult:
        """Define what the values of the feedback ``name`` mean; a new version where it
        changed. Feedback the join takes from then on gets it; stored rows keep theirs."""
        key = await core.authenticate(request, "admin")
        raw = await core.read_raw(request)
        if len(raw) > MAX_CONFIG_BYTES:
            raise HTTPException(413, f"a score config is at most {MAX_CONFIG_BYTES:,} bytes")
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HTTPException(422, 'the body is a JSON object: {"kind": "rating", ...}')
        if body.get("name", name) != name:
            raise HTTPException(422, f"name: the path says {name!r}, the body {body['name']!r}")
        if "version" in body:
            raise HTTPException(422, "version: assigned when stored; leave it out")
        sent = body.pop("project", None)
        if sent is not None and project is not None and sent != project:
            raise HTTPException(422, f"project: the query says {project!r}, the body {sent!r}")
        scope = _project(key, project or sent)
        try:
            config = ScoreConfig.parse({**body, "name": name, "project": scope})
        except InvalidEvent as exc:
            raise HTTPException(422, exc.reason) from None
        stored, changed = await asyncio.to_thread(put_config, sql, database, config)
        return PutResult(config=stored, changed=changed)

    @app.delete("/v1/score-configs/{name}", response_model=DeleteResult,
                responses=responses({**WRITE_ERRORS,
                                     404: "No config of this name in force."}))  # fmt: skip
    async def delete_score_config(
        name: str, request: Request, project: str | None = None
    ) -> DeleteResult:
        """End the config of ``name``: feedback taken from then on gets the default
        derivation; stored rows keep the version they were stored with."""
        key = await core.authenticate(request, "admin")
        scope = _project(key, project)
        version = await asyncio.to_thread(delete_config, sql, database, scope, name)
        if version is None:
            raise HTTPException(404, f"no score config {name!r} in project {scope!r}")
        return DeleteResult(project=scope, name=name, version=version)
