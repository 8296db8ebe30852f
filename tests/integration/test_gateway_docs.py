"""``/docs`` works offline: Swagger UI from the package, under the gateway's strict CSP.

FastAPI's default page loads Swagger UI from a CDN and runs an inline script; with no
network, or with the Content-Security-Policy every answer carries, it stays blank.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import Up, start_up, stop, worker_env

LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
async def gateway(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Up]:
    tmp = tmp_path_factory.mktemp("docs")
    env = await worker_env(broker, clean_env, tmp, "docs")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    yield up
    stop(up)


async def test_the_docs_list_every_operation_offline_with_no_csp_violation(
    gateway, browser, artifacts
):
    await browser.viewport(1280, 900)
    await browser.goto(f"{gateway.info.gateway_url}/docs")  # the browser reaches loopback only
    await browser.wait_for("document.querySelectorAll('.opblock').length > 10")
    operations = await browser.eval(
        "[...document.querySelectorAll('.opblock-summary')].map(o =>"
        " o.querySelector('.opblock-summary-method').textContent + ' ' +"
        " o.querySelector('.opblock-summary-path').textContent.replace(/\\u200b/g, ''))"
    )
    assert {"POST /v1/feedback", "GET /v1/feedback", "POST /v1/traces"} <= set(operations)
    await browser.click("#operations-default-post_feedback_v1_feedback_post")
    await browser.wait_for("document.querySelector('.opblock.is-open .responses-table')")
    await browser.screenshot(artifacts / "docs.png")

    # "Try it out" sends the request from the page: allowed by connect-src 'self'
    health = "#operations-default-healthz_healthz_get"
    await browser.click(health)
    await browser.click(f"{health} .try-out__btn")
    await browser.click(f"{health} .execute")
    status = f"{health} .live-responses-table tr.response .response-col_status"
    assert await browser.wait_for(f"document.querySelector('{status}')?.textContent") == "200"

    off_loopback = [u for u in browser.requests if urlsplit(u).hostname not in LOOPBACK]
    assert off_loopback == []
    assert browser.problems == []
