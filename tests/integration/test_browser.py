"""The JavaScript snippet in a real headless Chromium: click, and the row is in ClickHouse.

The example page (producers/js/example.html) is served from its own origin, so
the browser makes real cross-origin requests to the gateway (CORS). Chromium is
driven over the DevTools protocol (tests/browser.py); the clicks are mouse events at the
buttons.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import unique
from tests.integration.conftest import run, sql_rows, start_up, stop, worker_env
from thumbline.broker import free_port

JS = Path(__file__).resolve().parents[2] / "producers" / "js"


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    """Serves producers/js on its own origin, as a web app would."""
    app = web.Application()
    app.router.add_static("/", JS)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_clicks_in_the_page_become_rows_in_clickhouse(
    broker, thumbline_bin, clean_env, tmp_path, browser, page_server
):
    env = await worker_env(broker, clean_env, tmp_path, "browser",
                           THUMBLINE_GATEWAY_CORS_ORIGINS=page_server)  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        key = run(thumbline_bin, env, "keys", "create", "--scope", "ingest", "--project", "web")
        assert key.returncode == 0, key.stderr
        trace = unique("page")
        query = f"url={up.info.gateway_url}&key={key.stdout.strip()}&trace={trace}&user=u-7"
        await browser.goto(f"{page_server}/example.html?{query}")
        await browser.wait_for("window.thumblineReady === true")

        await browser.click('[data-thumbline="down"]')
        assert await browser.wait_for(
            "document.getElementById('answer').getAttribute('data-thumbline-state') === 'sent'"
        )
        await browser.type("textarea", "Albany is right, the rest is wrong")
        await browser.click('form[data-thumbline="comment"] button')
        await browser.click('[data-thumbline="copy"]')

        sql = ("SELECT kind, name, label, comment, user_id, project FROM thumbline.feedback "
               f"FINAL WHERE trace_id = '{trace}' ORDER BY kind")  # fmt: skip
        rows: list[dict[str, Any]] = []
        for _ in range(60):  # orphans (no trace was sent) are written after the grace
            rows = await asyncio.to_thread(sql_rows, thumbline_bin, env, sql)
            if len(rows) == 3:
                break
            await asyncio.sleep(0.5)
        assert [(r["kind"], r["name"], r["label"]) for r in rows] == [
            ("signal", "copied", "neutral"),
            ("text", "text", "neutral"),
            ("thumb", "thumb", "bad"),
        ]
        assert rows[1]["comment"] == "Albany is right, the rest is wrong"
        assert {(r["user_id"], r["project"]) for r in rows} == {("u-7", "web")}
    finally:
        stop(up)
