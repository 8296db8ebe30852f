"""The JavaScript snippet in a real headless Chromium: click, and the row is in ClickHouse.

The example page (producers/js/example.html) is served from its own origin, so
the browser makes real cross-origin requests to the gateway (CORS). Chromium is
driven over the DevTools protocol; the clicks are mouse events at the buttons.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import system_tool, unique
from tests.integration.conftest import run, sql_rows, start_up, stop, worker_env
from thumbline.broker import free_port

JS = Path(__file__).resolve().parents[2] / "producers" / "js"


@pytest.fixture(scope="module")
def chromium_bin() -> str:
    return system_tool("chromium", "chromium-browser", package="chromium")


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self._ws:
            data = message.json()
            if data.get("id") == call_id:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise AssertionError("the browser closed the connection")

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)  # fmt: skip
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        for _ in range(int(timeout / 0.1)):
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    async def click(self, selector: str) -> None:
        box = await self.eval(
            f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)  # fmt: skip

    async def type(self, selector: str, text: str) -> None:
        await self.eval(f"document.querySelector('{selector}').focus()")
        await self.call("Input.insertText", text=text)


@pytest.fixture
async def chromium(chromium_bin, tmp_path) -> AsyncIterator[Page]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [chromium_bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'c'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                        targets = [t for t in await r.json() if t["type"] == "page"]
                    if targets:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            assert targets, "Chromium did not open its DevTools port"
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes
        proc.wait()


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
    broker, thumbline_bin, clean_env, tmp_path, chromium, page_server
):
    env = await worker_env(broker, clean_env, tmp_path, "browser",
                           THUMBLINE_GATEWAY_CORS_ORIGINS=page_server)  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        key = run(thumbline_bin, env, "keys", "create", "--scope", "ingest", "--project", "web")
        assert key.returncode == 0, key.stderr
        trace = unique("page")
        query = f"url={up.info.gateway_url}&key={key.stdout.strip()}&trace={trace}&user=u-7"
        await chromium.call("Page.enable")
        await chromium.call("Page.navigate", url=f"{page_server}/example.html?{query}")
        await chromium.wait_for("window.thumblineReady === true")

        await chromium.click('[data-thumbline="down"]')
        assert await chromium.wait_for(
            "document.getElementById('answer').getAttribute('data-thumbline-state') === 'sent'"
        )
        await chromium.type("textarea", "Albany is right, the rest is wrong")
        await chromium.click('form[data-thumbline="comment"] button')
        await chromium.click('[data-thumbline="copy"]')

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
