"""The security headers middleware, on a bare ASGI app and on the whole gateway app, broker-free."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from thumbline.metrics import Metrics
from thumbline.producers.gateway import build_app
from thumbline.producers.gateway_headers import (
    CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    SecurityHeaders,
)


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose response tries to set its own, looser policy."""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/html"),
        (b"content-security-policy", b"default-src *; script-src 'unsafe-inline'"),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"<p>hi</p>"})


async def call(scope_type: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await SecurityHeaders(answer)({"type": scope_type}, receive, send)
    return sent


async def test_every_http_response_carries_each_header_once_and_a_route_cannot_loosen_the_policy():
    start = (await call("http"))[0]
    headers = [(k.decode(), v.decode()) for k, v in start["headers"]]
    names = [k for k, _ in headers]
    assert sorted(names) == sorted({*names}), "each header once"
    got = dict(headers)
    assert got["content-security-policy"] == CONTENT_SECURITY_POLICY
    for name, value in SECURITY_HEADERS:
        assert got[name] == value
    assert got["content-type"] == "text/html"


def test_the_policy_allows_only_the_gateways_own_origin_and_nothing_inline():
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert "http" not in CONTENT_SECURITY_POLICY  # no CDN, no other host
    assert {name for name, _ in SECURITY_HEADERS} == {
        "content-security-policy", "x-content-type-options", "referrer-policy",
        "x-frame-options", "cross-origin-opener-policy",
    }  # fmt: skip


async def test_other_connections_pass_through_untouched():
    assert (await call("websocket"))[0]["headers"] == [
        (b"content-type", b"text/html"),
        (b"content-security-policy", b"default-src *; script-src 'unsafe-inline'"),
    ]


def gateway() -> Any:
    app = build_app(
        producer=SimpleNamespace(), keys=SimpleNamespace(), reads=SimpleNamespace(),  # type: ignore[arg-type]
        sql=SimpleNamespace(),  # type: ignore[arg-type]
        database="db", host="127.0.0.1", metrics=Metrics(CollectorRegistry()),
        cors_origins=("https://app.example",),
    )  # fmt: skip

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug nothing handles")

    return app


async def asgi_get(app: Any, path: str) -> tuple[dict[str, Any], BaseException | None]:
    """The response start of ``GET path`` through the whole app, and what it raised."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8788)}  # fmt: skip
    raised = None
    try:
        await app(scope, receive, send)
    except RuntimeError as exc:  # the server logs it after the 500 is sent
        raised = exc
    return sent[0], raised


async def test_even_the_500_of_a_bug_nothing_handled_carries_the_headers():
    start, raised = await asgi_get(gateway(), "/boom")
    assert start["status"] == 500 and raised is not None
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    for name, value in SECURITY_HEADERS:
        assert headers[name] == value
