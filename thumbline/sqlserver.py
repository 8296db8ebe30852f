"""SQL over loopback: the store's owner answers queries for other processes.

Only one process may open a chDB path, so ``thumbline up`` owns it and serves
``POST /sql`` on 127.0.0.1 with a bearer token from the run file (mode 0600).
Queries run read-only unless ``write=1`` is asked for. :func:`run_sql` is the
client side: it picks the store directly, or the owner, whichever applies.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from thumbline import runfile
from thumbline.errors import StoreError, StoreLocked
from thumbline.settings import Settings
from thumbline.store import open_client, store_error

logger = logging.getLogger(__name__)

#: Output formats the endpoint passes through from ClickHouse.
FORMATS = frozenset(
    {"JSONCompact", "JSON", "JSONEachRow", "CSVWithNames", "TabSeparatedWithNames", "Pretty"}
)
MAX_SQL_BYTES = 1_000_000


class SqlServer:
    """Serves ``POST /sql`` from a pool of read-only clients and one writer.

    ``start()`` returns once it listens; ``stop()`` is safe to call twice.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        writer: Client,
        host: str = "127.0.0.1",
        port: int = 0,
        readers: int = 3,
        token: str | None = None,
    ) -> None:
        self.settings = settings
        self.token = token or secrets.token_urlsafe(24)
        self.on_write: Callable[[], None] | None = None
        self._writer = writer
        self._writer_lock = threading.Lock()
        self._readers: queue.Queue[Client] = queue.Queue()
        for _ in range(readers):
            self._readers.put(open_client(settings, readonly=True))
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SqlServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="thumbline-sql", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(5)
            while not self._readers.empty():
                self._readers.get_nowait().close()

    @contextmanager
    def _client(self, write: bool) -> Iterator[Client]:
        if write:
            with self._writer_lock:
                yield self._writer
        else:
            client = self._readers.get()
            try:
                yield client
            finally:
                self._readers.put(client)

    def execute(self, sql: str, fmt: str, write: bool) -> bytes:
        with self._client(write) as client:
            out = bytes(client.raw_query(sql, fmt=fmt))
        if write and self.on_write is not None:
            self.on_write()  # e.g. the gateway forgets cached keys: a revocation is at once
        return out


class _Handler(BaseHTTPRequestHandler):
    server_ref: SqlServer
    # Without this every response waits for the peer's delayed ACK: 40+ ms each.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("sql endpoint: " + format, *args)  # noqa: G003

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found: use POST /sql or GET /healthz")

    def do_POST(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/sql":
            return self._error(HTTPStatus.NOT_FOUND, "not found: use POST /sql")
        expected = f"Bearer {self.server_ref.token}"
        if not secrets.compare_digest(self.headers.get("Authorization", ""), expected):
            return self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
        query = urllib.parse.parse_qs(url.query)
        fmt = query.get("format", ["JSONCompact"])[0]
        if fmt not in FORMATS:
            return self._error(HTTPStatus.BAD_REQUEST, f"format must be one of {sorted(FORMATS)}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_SQL_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "SQL longer than 1 MB")
        sql = self.rfile.read(length).decode("utf-8", "replace")
        if not sql.strip():
            return self._error(HTTPStatus.BAD_REQUEST, "empty SQL")
        write = query.get("write", ["0"])[0] == "1"
        try:
            body = self.server_ref.execute(sql, fmt, write)
        except ClickHouseError as exc:
            err = store_error(exc, self.server_ref.settings)
            return self._error(HTTPStatus.BAD_REQUEST, str(err), code=err.code)
        self._send(HTTPStatus.OK, body, "application/octet-stream")

    def _error(self, status: HTTPStatus, message: str, code: int | None = None) -> None:
        body = orjson.dumps({"error": message, "code": code})
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_sql(
    settings: Settings, sql: str, *, fmt: str = "JSONCompact", write: bool = False
) -> bytes:
    """Run ``sql`` on the store wherever it is, and return ClickHouse's output in ``fmt``.

    A ClickHouse server is queried directly. A chDB path is queried through its
    owner when ``thumbline up`` runs, and opened directly when nobody owns it.

    Raises:
        StoreError: the query failed (the message is ClickHouse's, with its code).
        StoreLocked: the path is held by a process that serves no SQL.
    """
    if fmt not in FORMATS:
        raise StoreError(f"format must be one of {sorted(FORMATS)}")
    if settings.store_is_chdb:
        info = runfile.read(settings.run_file)
        if info is not None and info.sql_url:
            return _query_owner(info, sql, fmt, write)
    try:
        client = open_client(settings, readonly=not write)
    except StoreLocked:
        info = runfile.read(settings.run_file)  # the owner may have just started
        if info is not None and info.sql_url:
            return _query_owner(info, sql, fmt, write)
        raise
    try:
        return bytes(client.raw_query(sql, fmt=fmt))
    except ClickHouseError as exc:
        raise store_error(exc, settings) from None
    finally:
        client.close()


def _query_owner(info: runfile.RunInfo, sql: str, fmt: str, write: bool) -> bytes:
    params = urllib.parse.urlencode({"format": fmt, "write": "1" if write else "0"})
    request = urllib.request.Request(  # noqa: S310 (a loopback http URL we wrote ourselves)
        f"{info.sql_url}/sql?{params}",
        data=sql.encode(),
        headers={"Authorization": f"Bearer {info.sql_token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                detail = orjson.loads(exc.read())
            except orjson.JSONDecodeError:
                detail = {"error": f"HTTP {exc.code}", "code": None}
        raise StoreError(str(detail.get("error")), code=detail.get("code")) from None
    except urllib.error.URLError as exc:
        raise StoreError(
            f"the running thumbline (pid {info.pid}) did not answer at {info.sql_url}: {exc.reason}"
        ) from None
