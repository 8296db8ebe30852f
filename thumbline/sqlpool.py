"""Pools of sandbox clients: one client per thread, and a fresh one after a failure.

chDB and clickhouse-connect block, and one client runs one query at a time.
A chDB client whose query failed part way (a time limit, an error while
rows streamed) hands the rows it had produced to its *next* query: measured
with chDB 4.4, the query after a timeout returned the timed-out query's rows
before its own. So a client that saw a query fail is closed and replaced
before anyone else uses it (about 12 ms), and the next caller, maybe another
key, never sees rows that were not its own.

:class:`SqlPool` adds threads of its own for an asyncio server: a slow query
holds a thread of its own pool only. The gateway gives ``POST /v1/sql`` one
pool and its inbox and trace reads another, so no admin query delays a read.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from clickhouse_connect.driver.client import Client

from thumbline.errors import SqlRefused
from thumbline.sandbox import Sandbox, open_sandbox_client
from thumbline.settings import Settings

logger = logging.getLogger(__name__)


class ClientPool:
    """``size`` clients lent one at a time; ``close()`` is safe to call twice."""

    def __init__(
        self, settings: Settings, *, size: int,
        opener: Callable[[Settings], Client] = open_sandbox_client,
    ) -> None:  # fmt: skip
        self._settings, self._opener = settings, opener
        self._clients: queue.Queue[Client] = queue.Queue()
        try:
            for _ in range(size):
                self._clients.put(opener(settings))
        except BaseException:
            self.close()
            raise

    @contextmanager
    def client(self) -> Iterator[Client]:
        """Lend a client (waits for one); replaced if the store failed a query on it."""
        client = self._clients.get()
        try:
            yield client
        except BaseException as exc:
            if not (isinstance(exc, SqlRefused) and exc.code is None):  # the checker's own refusal
                client = self._replace(client)
            raise
        finally:
            self._clients.put(client)

    def _replace(self, client: Client) -> Client:
        try:
            fresh = self._opener(self._settings)
        except Exception as exc:  # noqa: BLE001 (keep the old one rather than shrink the pool)
            logger.warning("could not replace a store client after a failed query: %s", exc)
            return client
        client.close()
        return fresh

    def close(self) -> None:
        while not self._clients.empty():
            self._clients.get_nowait().close()


class SqlPool:
    """Checked, sandboxed SQL on ``size`` clients and as many threads; ``close()`` twice is safe.

    Every query goes through :meth:`Sandbox.run`: it raises :class:`SqlRefused`
    for what the sandbox refuses (or stops at a limit) and :class:`StoreError`
    for what ClickHouse refuses.
    """

    def __init__(
        self, settings: Settings, *, size: int, name: str, sandbox: Sandbox | None = None,
        opener: Callable[[Settings], Client] = open_sandbox_client,
    ) -> None:  # fmt: skip
        self.sandbox = sandbox or Sandbox(settings)
        self._clients = ClientPool(settings, size=size, opener=opener)
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=name
        )

    async def run(
        self, sql: str, *, fmt: str = "JSONEachRow", parameters: dict[str, Any] | None = None
    ) -> bytes:
        """ClickHouse's output of ``sql`` in ``fmt``, once the sandbox accepted it;
        ``parameters`` are bound by ClickHouse to its ``{name:Type}`` placeholders."""
        if self._executor is None:
            raise RuntimeError("the SQL pool is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, sql, fmt, parameters)

    def _run(self, sql: str, fmt: str, parameters: dict[str, Any] | None) -> bytes:
        with self._clients.client() as client:  # never waits: as many clients as threads
            return self.sandbox.run(client, sql, fmt=fmt, parameters=parameters)

    def close(self) -> None:
        """Wait for running queries (each ends within the time limit), then close the clients."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._clients.close()
