"""SQL from other processes: the client side of the store owner's loopback endpoint.

:func:`run_sql` is what ``thumbline sql``, ``inbox``, ``keys`` and the other
commands call: it runs SQL in the sandbox (:mod:`thumbline.sandbox`) on a
ClickHouse server directly, on a chDB path directly when nobody owns it, or
through the owner (``thumbline up``) when it runs. :class:`OwnerClient` is a
join helper's way to the owner's ``POST /query`` and ``POST /insert``.
"""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError

from thumbline import runfile
from thumbline.errors import (
    SqlRefused,
    StoreError,
    StoreLocked,
    StoreMissing,
    StoreStarting,
    StoreUnavailable,
)
from thumbline.queries import trace_stored_sql
from thumbline.sandbox import Sandbox, open_insert_client, open_sandbox_client
from thumbline.settings import Settings

logger = logging.getLogger(__name__)

#: The largest body of one insert request to the owner (its limit is far above).
INSERT_REQUEST_BYTES = 64 * 1024 * 1024

#: Output formats the endpoint passes through from ClickHouse.
FORMATS = frozenset(
    {"JSONCompact", "JSON", "JSONEachRow", "CSVWithNames", "TabSeparatedWithNames", "Pretty"}
)


def run_sql(
    settings: Settings, sql: str, *, fmt: str = "JSONCompact", write: bool = False,
    open_path: bool = True, parameters: dict[str, Any] | None = None,
) -> bytes:  # fmt: skip
    """Run ``sql`` in the SQL sandbox wherever the store is; ClickHouse's output in ``fmt``.

    Read mode runs one SELECT, EXPLAIN or DESCRIBE over thumbline's database;
    ``write`` also runs ``INSERT INTO <db>.<table> [(columns)] SELECT ...`` into
    a thumbline table, nothing else. A ClickHouse server is queried directly. A
    chDB path is queried through its owner when ``thumbline up`` runs, and
    opened directly when nobody owns it, unless ``open_path`` is false.
    ``parameters`` are bound by ClickHouse to the ``{name:Type}`` placeholders
    of ``sql``: values never written into the SQL text.

    Raises:
        SqlRefused: the sandbox refused the SQL (the message says why and what it runs).
        StoreError: the query failed (the message is ClickHouse's, with its code).
        StoreLocked: the path is held by a process that serves no SQL.
        StoreStarting: ``thumbline up`` is starting on the path (it serves SQL soon).
        StoreMissing: the chDB path holds no store (none is created).
        StoreUnavailable: ``open_path`` is false and no running thumbline serves the path.
    """
    if fmt not in FORMATS:
        raise StoreError(f"format must be one of {sorted(FORMATS)}")
    if settings.store_is_chdb:
        info = runfile.read(settings.run_file)
        if info is not None and info.sql_url:
            return _query_owner(info, sql, fmt, write, parameters)
        if not open_path:
            raise StoreUnavailable(
                f"no running thumbline up serves the store in {settings.data_dir}"
            )
        _check_unowned(settings)
    try:
        client = open_sandbox_client(settings)
    except StoreLocked:
        info = runfile.read(settings.run_file)  # the owner may have just started
        if info is not None and info.sql_url:
            return _query_owner(info, sql, fmt, write, parameters)
        raise
    sandbox = Sandbox(settings)
    try:
        checked = sandbox.check(client, sql, write=write, parameters=parameters)
        if checked.kind != "insert":
            return sandbox.execute(client, checked, fmt=fmt)
        writer = open_insert_client(settings)
        try:
            return sandbox.execute(writer, checked, fmt=fmt)
        finally:
            writer.close()
    finally:
        client.close()


def _check_unowned(settings: Settings) -> None:
    """Raise unless the chDB path may be opened here: it exists (a read creates no store),
    and no ``thumbline up`` is starting on it (it would find its store taken)."""
    pid = runfile.holder(settings.data_dir)
    if pid is not None:
        raise StoreStarting(pid)
    path = Path(settings.store_url.removeprefix("chdb://"))
    if path.is_dir():
        return
    if settings.clickhouse_url is not None:
        raise StoreMissing(f"no thumbline store at {path}: check THUMBLINE_CLICKHOUSE_URL")
    raise StoreMissing(
        f"no thumbline store in {settings.data_dir.resolve()}: start `thumbline up` there, "
        "or set THUMBLINE_DATA_DIR to the data dir of the one you started"
    )


def trace_stored(settings: Settings, project: str, trace_id: str, *, timeout: float) -> bool | None:
    """Whether the store holds any span of ``trace_id`` in ``project``; never raises.

    None when it cannot say within ``timeout`` seconds: the query failed or was
    slow, or the store is a chDB path that no running ``thumbline up`` serves
    (it is not opened for this: that would take the path's lock, and no join
    writes to it then anyway).
    """
    sql = trace_stored_sql(settings.clickhouse_database, project, trace_id)
    answer: list[bytes] = []

    def ask() -> None:
        try:
            answer.append(run_sql(settings, sql, fmt="JSONCompact", open_path=False))
        except Exception:  # noqa: BLE001 (no answer is an answer here: the caller goes on)
            logger.debug("could not look trace %s up", trace_id, exc_info=True)

    # A thread the process does not wait for at exit: a store that hangs costs the
    # caller ``timeout`` and no more.
    asker = threading.Thread(target=ask, name="trace-lookup", daemon=True)
    asker.start()
    asker.join(timeout)
    if not answer:
        return None
    try:
        return int(orjson.loads(answer[0])["data"][0][0]) > 0
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


def _query_owner(
    info: runfile.RunInfo, sql: str, fmt: str, write: bool, parameters: dict[str, Any] | None
) -> bytes:
    query = {"format": fmt, "write": "1" if write else "0"}
    body = sql.encode()
    if parameters:  # the body is then {"sql": ..., "parameters": {...}}
        query["bound"] = "1"
        body = orjson.dumps({"sql": sql, "parameters": parameters})
    request = urllib.request.Request(  # noqa: S310 (a loopback http URL we wrote ourselves)
        f"{info.sql_url}/sql?{urllib.parse.urlencode(query)}",
        data=body,
        headers={"Authorization": f"Bearer {info.sql_token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            data = exc.read()
            try:
                detail = orjson.loads(data)
            except orjson.JSONDecodeError:  # e.g. the port's 503 at its bound
                text = data[:500].decode("utf-8", "replace").strip()
                detail = {"error": text or f"HTTP {exc.code}", "code": None}
        if detail.get("reason"):
            raise SqlRefused(
                str(detail.get("error")), reason=str(detail["reason"]), code=detail.get("code")
            ) from None
        kind = StoreUnavailable if exc.code >= HTTPStatus.INTERNAL_SERVER_ERROR else StoreError
        raise kind(str(detail.get("error")), code=detail.get("code")) from None
    except urllib.error.URLError as exc:
        raise StoreUnavailable(
            f"the running thumbline (pid {info.pid}) did not answer at {info.sql_url}: {exc.reason}"
        ) from None


def _utc_text(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


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
    the store's: an unreachable owner, or a store that does not answer it, is
    ``OperationalError`` (transient: waited out); a request the owner refuses
    (a statement the sandbox or ClickHouse refuses, a wrong token, a body over
    the owner's limits) is ``ProgrammingError``, since sending it again cannot
    help. An insert larger than :data:`INSERT_REQUEST_BYTES` travels in several
    requests, cut between rows, so no batch meets the owner's limit.
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
        for part in _parts(insert_block, INSERT_REQUEST_BYTES):
            self._post(f"/insert?{params}", part)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _post(self, path: str, body: bytes) -> bytes:
        with self._lock:
            try:
                response, data = self._exchange(path, body)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise OperationalError(
                    f"the store's owner did not answer at {self._address[0]}:{self._address[1]}: "
                    f"{exc!r}; is thumbline up still running?"
                ) from None
        if response.status == HTTPStatus.OK:
            return data
        try:
            detail = orjson.loads(data)
            message, code = str(detail.get("error")), detail.get("code")
        except (orjson.JSONDecodeError, AttributeError):  # e.g. the port's 503 at its bound
            message = data[:500].decode("utf-8", "replace").strip() or f"HTTP {response.status}"
            code = None
        if response.status < HTTPStatus.INTERNAL_SERVER_ERROR:  # refused: the same fails again
            raise ProgrammingError(f"the store's owner refused: {message}", code=code)
        raise OperationalError(message, code=code)

    def _exchange(self, path: str, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its reply, on the kept connection or a new one."""
        reused = self._conn is not None
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
        try:
            self._conn.request("POST", path, body=body, headers=self._headers)
            response = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError) as exc:  # RemoteDisconnected is one
            if not reused:
                raise
            # The owner closes a connection idle past THUMBLINE_SQL_IDLE_SECONDS, and may do
            # so as this request leaves. A kept connection closed before a byte of the reply
            # came means the owner never read the request (it replies to each request it
            # reads, a refusal too), so sending it once more on a new connection is safe; an
            # insert sent twice would not double rows anyway: they are keyed by their ids.
            logger.debug("the owner closed the kept connection (%r): sending again", exc)
            self._drop()
            self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
            self._conn.request("POST", path, body=body, headers=self._headers)
            response = self._conn.getresponse()
        return response, response.read()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _parts(block: bytes, limit: int) -> list[bytes]:
    """``block`` (rows separated by newlines) in parts of at most ``limit`` bytes, cut
    between rows; a row longer than ``limit`` travels alone."""
    if len(block) <= limit:
        return [block]
    parts, start = [], 0
    while start < len(block):
        end = start + limit
        if end < len(block):
            cut = block.rfind(b"\n", start, end)
            end = cut if cut > start else block.find(b"\n", end)
            end = len(block) if end < 0 else end
        parts.append(block[start:end])
        start = end + 1
    return parts
