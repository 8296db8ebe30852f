"""SQL over loopback: the store's owner answers queries for other processes.

Only one process may open a chDB path, so ``thumbline up`` owns it and serves,
on 127.0.0.1 with a bearer token from the run file (mode 0600):

- ``POST /sql``: SQL text in, ClickHouse's output in a chosen format out;
  read-only unless ``write=1`` is asked for. :func:`run_sql` is the client
  side: it picks the store directly, or the owner, whichever applies.
- ``POST /query`` and ``POST /insert``: what a join helper process needs
  (:class:`OwnerClient`): a parameterised query whose rows come back typed, and
  a JSONEachRow insert into one of the stream's tables.
"""

from __future__ import annotations

import http.client
import logging
import queue
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
    ProgrammingError,
)

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
#: Largest insert a helper may send in one request (the sink's batches are far smaller).
MAX_INSERT_BYTES = 512 * 1024 * 1024
#: Tables a helper may insert into (the join's output).
INSERT_TABLES = frozenset({"feedback", "traces", "dead_letters"})


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
        #: Called with the table after each insert from a helper (metrics).
        self.on_insert: Callable[[str], None] | None = None
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

    def query(self, sql: str, parameters: dict[str, Any]) -> bytes:
        """Rows of a read-only query as JSON: column names, ClickHouse types, rows."""
        with self._client(False) as client:
            result = client.query(sql, parameters=parameters)
            return orjson.dumps(
                {
                    "columns": list(result.column_names),
                    "types": [t.name for t in result.column_types],
                    "rows": result.result_rows,
                },
                option=orjson.OPT_PASSTHROUGH_DATETIME,
                default=_json_value,
            )

    def insert(self, table: str, block: bytes, settings: dict[str, Any]) -> None:
        """A JSONEachRow insert into one of the join's tables."""
        with self._client(True) as client:
            client.raw_insert(
                f"{self.settings.clickhouse_database}.{table}",
                insert_block=block, settings=settings, fmt="JSONEachRow",
            )  # fmt: skip
        if self.on_insert is not None:
            self.on_insert(table)


def _utc_text(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot send {type(value).__name__} in a query result")


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
        if url.path not in ("/sql", "/query", "/insert"):
            return self._error(HTTPStatus.NOT_FOUND, "not found: use POST /sql")
        expected = f"Bearer {self.server_ref.token}"
        if not secrets.compare_digest(self.headers.get("Authorization", ""), expected):
            return self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/query":
            return self._query()
        if url.path == "/insert":
            return self._insert(query)
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

    def _query(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_SQL_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "query longer than 1 MB")
        try:
            request = orjson.loads(self.rfile.read(length))
            sql, parameters = request["sql"], request.get("parameters") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._error(HTTPStatus.BAD_REQUEST, 'send {"sql": ..., "parameters": {...}}')
        try:
            body = self.server_ref.query(sql, parameters)
        except ClickHouseError as exc:
            err = store_error(exc, self.server_ref.settings)
            return self._error(HTTPStatus.BAD_REQUEST, str(err), code=err.code)
        self._send(HTTPStatus.OK, body, "application/json")

    def _insert(self, query: dict[str, list[str]]) -> None:
        table = query.get("table", [""])[0]
        if table not in INSERT_TABLES:
            return self._error(
                HTTPStatus.BAD_REQUEST, f"table must be one of {sorted(INSERT_TABLES)}"
            )
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_INSERT_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "insert larger than 512 MB")
        try:
            settings = orjson.loads(query.get("settings", ["{}"])[0])
        except orjson.JSONDecodeError:
            return self._error(HTTPStatus.BAD_REQUEST, "settings must be a JSON object")
        block = self.rfile.read(length)
        try:
            self.server_ref.insert(table, block, settings)
        except ClickHouseError as exc:
            err = store_error(exc, self.server_ref.settings)
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(err), code=err.code)
        self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")

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


@dataclass(frozen=True, slots=True)
class QueryRows:
    """What :meth:`OwnerClient.query` returns: the rows, as clickhouse-connect's result has them."""

    column_names: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


class OwnerClient:
    """The two calls of a clickhouse-connect client the join makes, served by the store's owner.

    A join helper process cannot open the owner's chDB path, so its sink and its
    trace lookups go through ``POST /insert`` and ``POST /query`` on the owner's
    loopback endpoint (one kept-alive connection, one call at a time). Failures
    raise clickhouse-connect's own errors, so callers treat them as they treat
    the store's: an unreachable owner or a refused insert is ``OperationalError``
    (the sink keeps its rows and retries).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 300.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> QueryRows:
        """Rows of ``query`` bound server-side; datetime parameters travel as UTC text."""
        bound = {
            name: _utc_text(value) if isinstance(value, datetime) else value
            for name, value in (parameters or {}).items()
        }
        body = self._post("/query", orjson.dumps({"sql": query, "parameters": bound}))
        result = orjson.loads(body)
        times = [i for i, t in enumerate(result["types"]) if "DateTime" in t]
        rows = []
        for row in result["rows"]:
            for i in times:
                if row[i] is not None:
                    row[i] = datetime.fromisoformat(row[i])
            rows.append(tuple(row))
        return QueryRows(tuple(result["columns"]), rows)

    def raw_insert(
        self, table: str, *, insert_block: bytes, settings: dict[str, Any] | None = None,
        fmt: str = "JSONEachRow",
    ) -> None:  # fmt: skip
        """Insert JSONEachRow ``insert_block`` into ``table`` (``db.name`` or ``name``)."""
        if fmt != "JSONEachRow":
            raise ProgrammingError(f"the owner takes JSONEachRow inserts, not {fmt}")
        params = urllib.parse.urlencode(
            {"table": table.rpartition(".")[2], "settings": orjson.dumps(settings or {}).decode()}
        )
        self._post(f"/insert?{params}", insert_block)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _post(self, path: str, body: bytes) -> bytes:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
                self._conn.request("POST", path, body=body, headers=self._headers)
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise OperationalError(
                    f"the store's owner did not answer at {self._address[0]}:{self._address[1]}: "
                    f"{exc!r}; is thumbline up still running?"
                ) from None
        if response.status == HTTPStatus.OK:
            return data
        try:
            message = str(orjson.loads(data).get("error"))
        except (orjson.JSONDecodeError, AttributeError):
            message = f"HTTP {response.status}"
        if response.status == HTTPStatus.BAD_REQUEST:
            raise DatabaseError(message)
        raise OperationalError(message)
