"""The security headers on every answer of the gateway: its JSON, its errors, its pages.

The web UI and ``/docs`` are written against :data:`CONTENT_SECURITY_POLICY`: scripts,
styles, fonts and requests from the gateway's own origin only, images also as ``data:``
URIs, nothing inline (no ``'unsafe-inline'``, no ``'unsafe-eval'``), and no page of the
gateway inside another site's frame. A page that needs more is a page to change, not the
policy.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeaders", "add_security_headers"]

#: The one policy of every page the gateway serves.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "font-src 'self'", "manifest-src 'self'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
])  # fmt: skip

#: (lower-case name, value) of each header every HTTP answer carries.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),  # a JSON answer is never run as a script
    ("referrer-policy", "no-referrer"),  # URLs carry filters and trace ids: not to others
    ("x-frame-options", "DENY"),  # frame-ancestors for browsers without CSP 2
    ("cross-origin-opener-policy", "same-origin"),
)

_RAW = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS]
_NAMES = frozenset(name for name, _ in _RAW)


class SecurityHeaders:
    """Pure ASGI middleware: adds :data:`SECURITY_HEADERS` to the start of every HTTP
    response, replacing any a route set itself (a route cannot loosen the policy).

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs
    each request's app in a task of its own and streams the body through a memory channel;
    this only edits one message, for no cost on the ingest path, and it sees the answers
    the other middleware (CORS preflights) make by themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message["headers"] = kept + _RAW
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(app: FastAPI) -> None:
    """Wrap ``app``'s whole middleware stack in :class:`SecurityHeaders`: outside CORS (its
    preflight answers), the request counter, and Starlette's ServerErrorMiddleware (the 500
    of an exception nothing handled), wherever in ``build_app`` this is called.

    ``app.add_middleware`` would put it inside ServerErrorMiddleware, which Starlette keeps
    outermost; so the stack Starlette builds on the first request is wrapped instead.
    """
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
