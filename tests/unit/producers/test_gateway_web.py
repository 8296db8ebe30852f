"""The web pages' files: served by the gateway from the package, no data in them, no CDN."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics
from thumbline.producers.gateway import build_app
from thumbline.web import STATIC


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str


class Client:
    """GET requests straight into the ASGI app (no server, no socket)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return asyncio.run(self._get(path, headers or {}))

    async def _get(self, path: str, headers: dict[str, str]) -> Answer:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": unquote(path), "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }  # fmt: skip
        sent: list[dict[str, Any]] = []
        asked, done = [], asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not asked:  # the request, then the client hangs up once answered
                asked.append(True)
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await self.app(scope, receive, send)
        start, *body = sent
        return Answer(
            start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in body).decode(errors="replace"),
        )  # fmt: skip


@pytest.fixture(scope="module")
def client() -> Client:
    app = build_app(
        producer=SimpleNamespace(), keys=SimpleNamespace(), reads=SimpleNamespace(),  # type: ignore[arg-type]
        sql=SimpleNamespace(),  # type: ignore[arg-type]
        database="db", host="127.0.0.1", metrics=Metrics(CollectorRegistry()),
    )  # fmt: skip
    return Client(app)


@pytest.mark.parametrize("path", ["/", "/inbox", "/rates", "/alerts", "/trace/t-1", "/trace/a/b"])
def test_every_page_path_serves_the_shell_that_names_its_scripts(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/assets/app.js">' in page.text


def test_the_assets_are_revalidated_on_every_load_so_an_upgrade_is_never_stale(client):
    script = client.get("/assets/app.js")
    assert script.status_code == 200
    assert script.headers["cache-control"] == "no-cache"
    assert "etag" in script.headers
    again = client.get("/assets/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304


def test_a_path_outside_the_assets_is_not_served(client):
    assert client.get("/assets/../gateway.py").status_code == 404
    assert client.get("/assets/%2e%2e/__init__.py").status_code == 404


def test_the_pages_load_nothing_from_another_origin_and_run_no_inline_script():
    for path in STATIC.rglob("*"):
        if path.suffix not in (".html", ".js", ".css") or "vendor" in path.parts:
            continue
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path
        assert "eval(" not in text and "new Function" not in text, path
        if path.suffix == ".html":
            inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text)
            assert not inline, f"{path}: inline scripts need 'unsafe-inline'"
            assert " style=" not in text and "<style" not in text, path


def test_every_vendored_library_carries_its_licence_and_where_it_came_from():
    for library in (STATIC / "vendor").iterdir():
        assert (library / "LICENSE").is_file(), library
        assert "npm pack" in (library / "VENDORED.md").read_text(), library
