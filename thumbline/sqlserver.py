"""SQL over loopback: the store's owner answers queries for other processes.

Only one process may open a chDB path, so ``thumbline up`` owns it and serves,
on 127.0.0.1 with a bearer token from the run file (mode 0600):

- ``POST /sql``: SQL text in, ClickHouse's output in a chosen format out, in
  the SQL sandbox (:mod:`thumbline.sandbox`): one SELECT, EXPLAIN or DESCRIBE
  over thumbline's database. ``write=1`` also takes ``INSERT INTO
  <db>.<table> [(columns)] SELECT ...`` into a thumbline table (what ``thumbline
  keys`` and ``thumbline sql --write`` send), and nothing else: no DDL.
  ``bound=1``: the body is ``{"sql": ..., "parameters": {...}}`` and ClickHouse
  binds the parameters to the SQL's ``{name:Type}`` placeholders (the inbox's
  filters travel so, never as SQL text).
  :func:`thumbline.sqlclient.run_sql` is the client side.
- ``POST /query`` and ``POST /insert``: what a join helper process needs
  (:class:`thumbline.sqlclient.OwnerClient`): a parameterised query in the same
  sandbox whose rows come back typed, and a JSONEachRow insert into one of the
  join's tables with a few insert settings.

- ``GET /ping`` and ``GET``/``POST /``: ClickHouse's HTTP interface, with its own
  users and passwords (:mod:`thumbline.chhttp`): what a process configured with
  ``THUMBLINE_CLICKHOUSE_URL=http://...`` and the user's tools send.

A refusal of the sandbox is a 400 whose JSON names the rule (``reason``); a
store that does not answer is a 503 (the caller waits and sends it again).

Every connection is bounded (:mod:`thumbline.httpbounds`): at most
``THUMBLINE_SQL_MAX_CONNECTIONS`` at once (one more is answered 503, ClickHouse's
code 202, and closed), each closed when it sends no whole request head within
``THUMBLINE_SQL_IDLE_SECONDS`` (an idle keep-alive one too) or its body stalls
that long: no client holds the owner's threads, whatever it sends.
"""

from __future__ import annotations

import logging
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import SecretStr

from thumbline.chhttp import StoreEndpoint
from thumbline.chwire import EndpointError, Request, content_length, form_fields, read_body
from thumbline.errors import ConfigError, SqlRefused, StoreError
from thumbline.httpbounds import BoundedHandler, BoundedHTTPServer
from thumbline.sandbox import Sandbox, open_insert_client
from thumbline.settings import Settings
from thumbline.sqlclient import FORMATS, OwnerClient, QueryRows, run_sql
from thumbline.sqlpool import ClientPool
from thumbline.store import store_error

__all__ = ["FORMATS", "INSERT_SETTINGS", "OwnerClient", "QueryRows", "SqlServer", "run_sql"]

logger = logging.getLogger(__name__)

MAX_SQL_BYTES = 1_000_000
#: Largest insert a helper may send in one request (the sink's batches are far smaller).
MAX_INSERT_BYTES = 512 * 1024 * 1024
#: Tables a helper or a worker may insert into (the join's and the rates' output).
INSERT_TABLES = frozenset({"feedback", "traces", "dead_letters", "feedback_rates", "alerts"})
#: Settings a helper's insert may carry: how ClickHouse reads the sink's JSON rows
#: (thumbline.stream_jobs.sink.JSON_SETTINGS) and insert deduplication.
INSERT_SETTINGS = frozenset({
    "input_format_skip_unknown_fields", "input_format_defaults_for_omitted_fields",
    "input_format_json_read_objects_as_strings", "input_format_json_read_numbers_as_strings",
    "input_format_json_read_bools_as_strings", "date_time_input_format",
    "insert_deduplication_token", "insert_deduplicate",
})  # fmt: skip


class SqlServer:
    """Serves ``POST /sql`` from a pool of sandbox clients, an insert client and one writer.

    ``writer`` takes the helpers' inserts (``POST /insert``); the checked
    ``INSERT ... SELECT`` of write mode runs on a client of its own, with the
    sandbox's limits and thumbline's database as its current one.

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
        handler = type(
            "Handler", (_Handler,), {"server_ref": self, "idle_seconds": settings.sql_idle_seconds}
        )
        try:  # first: a port in use fails before any client is opened
            self._httpd = BoundedHTTPServer(
                (host, port), handler, max_connections=settings.sql_max_connections
            )
        except OSError as exc:
            raise ConfigError(
                f"the SQL endpoint cannot listen on {host}:{port}: {exc.strerror}; "
                "set THUMBLINE_SQL_PORT (0: any free port)"
            ) from None
        self.sandbox = Sandbox(settings)
        self._readers = ClientPool(settings, size=readers)
        self._inserter = ClientPool(settings, size=1, opener=open_insert_client)
        #: The ClickHouse HTTP interface on the same port (thumbline.chhttp).
        self.endpoint = StoreEndpoint(
            settings, writer_password=_secret(settings.sql_writer_password),
            reader_password=_secret(settings.sql_reader_password),
        )  # fmt: skip
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def connections(self) -> int:
        """Connections the port holds now (at most ``THUMBLINE_SQL_MAX_CONNECTIONS``)."""
        return self._httpd.connections

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
            self._readers.close()
            self._inserter.close()
            self.endpoint.close()

    def execute(
        self, sql: str, fmt: str, write: bool, parameters: dict[str, Any] | None = None
    ) -> bytes:
        """Run ``sql`` in the sandbox; ``write`` also takes INSERT ... SELECT into a table.
        ``parameters`` are bound by ClickHouse to the ``{name:Type}`` placeholders.

        Raises:
            SqlRefused: the sandbox refused it.
            StoreError: ClickHouse refused it.
        """
        with self._readers.client() as client:
            checked = self.sandbox.check(client, sql, write=write, parameters=parameters)
            if checked.kind != "insert":
                return self.sandbox.execute(client, checked, fmt=fmt)
        with self._inserter.client() as inserter:
            out = self.sandbox.execute(inserter, checked, fmt=fmt)
        if self.on_write is not None:
            self.on_write()  # e.g. the gateway forgets cached keys: a revocation is at once
        return out

    def query(self, sql: str, parameters: dict[str, Any]) -> bytes:
        """Rows of a query in the sandbox as JSON: column names, ClickHouse types, rows."""
        with self._readers.client() as client:
            checked = self.sandbox.check(client, sql, parameters=parameters)
            try:
                result = client.query(checked.text, parameters=parameters)
            except ClickHouseError as exc:
                raise self.sandbox.error(exc) from None
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
        """A JSONEachRow insert into one of the join's tables (the caller checked both)."""
        with self._writer_lock:
            self._writer.raw_insert(
                f"{self.settings.clickhouse_database}.{table}",
                insert_block=block, settings=settings, fmt="JSONEachRow",
            )  # fmt: skip
        if self.on_insert is not None:
            self.on_insert(table)


def _secret(configured: SecretStr | None) -> str:
    return configured.get_secret_value() if configured else secrets.token_urlsafe(24)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot send {type(value).__name__} in a query result")


class _Handler(BoundedHandler):
    server_ref: SqlServer
    # Without this every response waits for the peer's delayed ACK: 40+ ms each.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Never the request line: its URL may hold SQL and query parameters.
        # A request refused before its line was read (414, 400) has no command nor path.
        path = getattr(self, "path", "").split("?", 1)[0]
        logger.debug("sql endpoint: %s %s", getattr(self, "command", None), path)

    def do_GET(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")
        elif path == "/ping":
            self._send(HTTPStatus.OK, b"Ok.\n", "text/plain; charset=UTF-8")
        elif path == "/":
            self._clickhouse()
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found: use POST /sql, GET /ping or /?query=")

    def do_POST(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/":
            return self._clickhouse()
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
        length = self._length()
        if length is None:
            return None
        if length > MAX_SQL_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "SQL longer than 1 MB")
        sql = self.rfile.read(length).decode("utf-8", "replace")
        parameters = None
        if query.get("bound", ["0"])[0] == "1":  # {"sql": ..., "parameters": {...}}
            try:
                request = orjson.loads(sql)
                sql, parameters = request["sql"], request["parameters"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                request = None
            if request is None or not isinstance(sql, str) or not isinstance(parameters, dict):
                return self._error(
                    HTTPStatus.BAD_REQUEST, 'bound=1 takes {"sql": ..., "parameters": {...}}'
                )
        if not sql.strip():
            return self._error(HTTPStatus.BAD_REQUEST, "empty SQL")
        write = query.get("write", ["0"])[0] == "1"
        try:
            body = self.server_ref.execute(sql, fmt, write, parameters)
        except StoreError as exc:
            return self._refused(exc)
        self._send(HTTPStatus.OK, body, "application/octet-stream")

    def _clickhouse(self) -> None:
        """ClickHouse's HTTP interface (thumbline.chhttp)."""
        endpoint = self.server_ref.endpoint
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            # who sends it, from the head alone, before a byte of the body is read: a
            # stranger's body is never held, the reader's is bounded by a query's size
            user = endpoint.user(Request(self.command, params, headers, b""))
            limit = endpoint.body_limit(user)
            body = read_body(self.rfile, headers, limit) if self.command == "POST" else b""
            fields = form_fields(headers.get("content-type", ""), body)
            if fields is not None:  # the query and its parameters, as a form
                params, body = {**params, **fields}, b""
        except (EndpointError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                exc = EndpointError(36, "a form field that is not UTF-8 text")
            self.close_connection = True  # the body may be unread
            reply = endpoint.error(exc, params.get("query_id", ""))
        else:
            reply = endpoint.handle(Request(self.command, params, headers, body))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    def _query(self) -> None:
        length = self._length()
        if length is None:
            return None
        if length > MAX_SQL_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "query longer than 1 MB")
        try:
            request = orjson.loads(self.rfile.read(length))
            sql, parameters = request["sql"], request.get("parameters") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._error(HTTPStatus.BAD_REQUEST, 'send {"sql": ..., "parameters": {...}}')
        if not isinstance(sql, str) or not isinstance(parameters, dict):
            return self._error(HTTPStatus.BAD_REQUEST, 'send {"sql": ..., "parameters": {...}}')
        try:
            body = self.server_ref.query(sql, parameters)
        except StoreError as exc:
            return self._refused(exc)
        self._send(HTTPStatus.OK, body, "application/json")

    def _insert(self, query: dict[str, list[str]]) -> None:
        length = self._length()
        if length is None:
            return None
        if length > MAX_INSERT_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "insert larger than 512 MB")
        block = self.rfile.read(length)
        table = query.get("table", [""])[0]
        if table not in INSERT_TABLES:
            return self._error(
                HTTPStatus.BAD_REQUEST, f"table must be one of {sorted(INSERT_TABLES)}"
            )
        try:
            settings = orjson.loads(query.get("settings", ["{}"])[0])
        except orjson.JSONDecodeError:
            settings = None
        if not isinstance(settings, dict) or not all(
            name in INSERT_SETTINGS and isinstance(value, str | int | bool)
            for name, value in settings.items()
        ):
            return self._error(
                HTTPStatus.BAD_REQUEST,
                f"settings must be a JSON object of {', '.join(sorted(INSERT_SETTINGS))} "
                "with plain values",
            )
        try:
            self.server_ref.insert(table, block, settings)
        except ClickHouseError as exc:
            return self._refused(store_error(exc, self.server_ref.settings))
        self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")

    def _length(self) -> int | None:
        """The request's Content-Length; None once a 400 has answered one that is not a
        number of bytes (unread: a read of -1 bytes would read until the peer closes)."""
        try:
            return content_length({"content-length": self.headers.get("Content-Length", "")})
        except EndpointError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return None

    def _refused(self, exc: StoreError) -> None:
        if exc.retriable:  # the store did not answer: the caller waits and sends it again
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc), code=exc.code)
        reason = exc.reason if isinstance(exc, SqlRefused) else None
        self._error(HTTPStatus.BAD_REQUEST, str(exc), code=exc.code, reason=reason)

    def _error(
        self, status: HTTPStatus, message: str, code: int | None = None, reason: str | None = None
    ) -> None:
        body = orjson.dumps({"error": message, "code": code, "reason": reason})
        # The request's body may be unread: the connection cannot serve another request.
        self.close_connection = True
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
