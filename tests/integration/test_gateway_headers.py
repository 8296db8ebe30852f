"""Every answer of a real gateway carries the security headers, with CORS beside them.

The web UI and /docs are written against ``CONTENT_SECURITY_POLICY``: a browser refuses
inline scripts and anything from another host on every page the gateway serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import unique
from tests.integration.conftest import Up, start_up, stop, worker_env
from thumbline.producers.gateway_headers import SECURITY_HEADERS

APP = "https://app.example"


@pytest.fixture(scope="module")
async def gateway(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Up]:
    """One `thumbline up` that allows one other origin (CORS), no key yet (open on loopback)."""
    tmp = tmp_path_factory.mktemp("headers")
    env = await worker_env(broker, clean_env, tmp, "headers", THUMBLINE_GATEWAY_CORS_ORIGINS=APP)
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    yield up
    stop(up)


async def answer(method: str, url: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as r,
    ):
        await r.read()
        return r.status, r.headers


def feedback() -> dict[str, str]:
    return {"trace_id": unique("h"), "label": "good"}


ROUTES = {  # what: (method, path, body, status)
    "an ingest": ("POST", "/v1/feedback", feedback, 202),
    "an invalid ingest": ("POST", "/v1/feedback", lambda: {"lable": "x"}, 422),
    "a JSON read": ("GET", "/v1/feedback?limit=1", None, 200),
    "a read of nothing": ("GET", "/v1/traces/no-such-trace", None, 404),
    "an unknown path": ("GET", "/no/such/path", None, 404),
    "a wrong method": ("DELETE", "/v1/feedback", None, 405),
    "the metrics": ("GET", "/metrics", None, 200),
    "the docs": ("GET", "/docs", None, 200),
    "the spec": ("GET", "/openapi.json", None, 200),
    "health": ("GET", "/healthz", None, 200),
}


@pytest.mark.parametrize("what", list(ROUTES))
async def test_every_kind_of_answer_carries_the_security_headers(gateway, what):
    method, path, body, status = ROUTES[what]
    got, headers = await answer(method, f"{gateway.info.gateway_url}{path}",
                                body() if body else None, Origin=APP)  # fmt: skip
    assert got == status
    for name, value in SECURITY_HEADERS:
        assert headers.getall(name) == [value], name
    assert headers["Access-Control-Allow-Origin"] == APP  # CORS still answers beside them


async def test_a_cors_preflight_is_answered_with_the_security_headers_too(gateway):
    status, headers = await answer(
        "OPTIONS", f"{gateway.info.gateway_url}/v1/feedback", Origin=APP,
        **{"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in headers["Access-Control-Allow-Methods"]
    for name, value in SECURITY_HEADERS:
        assert headers.getall(name) == [value], name
