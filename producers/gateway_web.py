"""The web pages: the inbox, a trace, rates over time and alerts, served by the gateway.

The pages are static files inside the package (``thumbline/web/static``): one
HTML shell, plain ES modules and a vendored chart library (uPlot), with no
build step, no CDN and no Node.js. They read the gateway's own JSON API
(``/v1/feedback``, ``/v1/traces/{id}``, ``/v1/rates``, ``/v1/alerts``,
``/v1/whoami``) with the read key the person enters once; the key stays in the
browser's session storage and is sent as ``Authorization: Bearer``, never in a
URL. The HTML and assets hold no data, so they are served without a key; every
row they show comes through the API's own key check and project scope.

- ``GET /``, ``/inbox``, ``/trace/{id}``, ``/rates``, ``/alerts``: the shell;
  the page's script draws the page named by the path (so a URL with its
  filters can be shared).
- ``GET /assets/...``: the scripts, styles and vendored libraries, revalidated
  on every load (``no-cache`` with an ETag) so an upgrade never serves stale
  scripts.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from thumbline.web import STATIC

#: The pages' paths (each serves the shell; the script draws the page).
PAGES = ("/", "/inbox", "/rates", "/alerts")


class Assets(StaticFiles):
    """Static files, revalidated on every load: a new version is never hidden by a cache."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def revalidated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k != b"cache-control"]
                message["headers"] = [*headers, (b"cache-control", b"no-cache")]
            await send(message)

        await super().__call__(scope, receive, revalidated)


def add_web_routes(app: FastAPI) -> None:
    """Serve the web pages on ``app``."""
    shell = STATIC / "index.html"

    async def page() -> FileResponse:
        return FileResponse(shell, media_type="text/html", headers={"Cache-Control": "no-cache"})

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/trace/{trace_id:path}", page, methods=["GET"], include_in_schema=False)

    async def icon() -> FileResponse:  # what a browser asks for a page without an icon link
        return FileResponse(STATIC / "icon.svg", media_type="image/svg+xml")

    app.add_api_route("/favicon.ico", icon, methods=["GET"], include_in_schema=False)
    app.mount("/assets", Assets(directory=STATIC), name="assets")
