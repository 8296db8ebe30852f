"""Serving the gateway's app: uvicorn on the running event loop, on a socket we bind.

:func:`check_exposure` refuses to serve beyond loopback without an API key;
:class:`Gateway` serves an app built by :func:`thumbline.producers.gateway.build_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from fastapi import FastAPI

from thumbline.errors import ConfigError
from thumbline.keys import KeyRing
from thumbline.producers.gateway_core import is_loopback

logger = logging.getLogger(__name__)


async def check_exposure(keys: KeyRing, host: str) -> None:
    """Refuse to serve beyond loopback with no API key; say so when auth is off."""
    if await asyncio.to_thread(keys.any_keys):
        return
    if not is_loopback(host):
        raise ConfigError(
            f"the gateway would listen on {host} with no API key: create one "
            "(thumbline keys create --scope ingest --project NAME) or bind to 127.0.0.1"
        )
    logger.warning(
        "gateway auth is off: no API key exists and it listens on loopback only "
        "(thumbline keys create turns it on)"
    )


class _Server(uvicorn.Server):
    """uvicorn inside a process that owns its own signal handling (``thumbline up``)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class Gateway:
    """Serves the app with uvicorn on the running event loop; ``stop()`` is safe twice.

    Call :func:`check_exposure` first (``thumbline.server.gateway`` does, before it
    connects to Kafka): this class does not check who may reach it.
    """

    def __init__(self, app: FastAPI, *, host: str, port: int) -> None:
        self._app, self._host, self._port = app, host, port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> Gateway:
        # Bound here, not by uvicorn: a port in use is then an error we can word
        # (uvicorn would exit the process).
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY on accepted sockets only
        # then, and without it every keep-alive response waits 40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the gateway cannot listen on {self._host}:{self._port}: {exc.strerror}; "
                "set THUMBLINE_GATEWAY_PORT (0: any free port)"
            ) from None
        sock.set_inheritable(True)
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off",
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve([sock]), name="thumbline-gateway")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError(f"the gateway stopped at start on {self._host}:{self._port}")
            await asyncio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None and self._task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
