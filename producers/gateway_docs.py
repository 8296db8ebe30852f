"""``GET /docs``: Swagger UI on the gateway's OpenAPI spec, from files in the package.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script: blank
without internet, and refused by the gateway's Content-Security-Policy
(:mod:`thumbline.producers.gateway_headers`). Here the page (``thumbline/web/static/
docs.html``), its script (``docs.js``) and Swagger UI itself
(``static/vendor/swagger-ui/``, see its ``VENDORED.md``) are served by the gateway under
``/assets/``; the spec stays at ``/openapi.json``. Build the app with
``docs_url=None, redoc_url=None`` so that FastAPI's pages do not shadow this one.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from thumbline.web import STATIC

__all__ = ["add_docs_routes"]


def add_docs_routes(app: FastAPI) -> None:
    """``/docs``; the files it loads (``/assets/docs.js``, ``/assets/vendor/swagger-ui/*``)
    are served with the web pages' assets (:mod:`thumbline.producers.gateway_web`)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})  # fmt: skip
