"""The embedded store as a ClickHouse HTTP endpoint: what clickhouse-connect, curl and
Grafana send, answered by the chDB owner.

Served beside :mod:`thumbline.sqlserver`'s routes (same address and port):
``GET /ping``, and ``GET``/``POST /`` with the SQL in ``?query=`` and/or the
body, ``database``, ``default_format``, ``param_<name>`` query parameters,
``query_id``, settings as URL parameters, bodies compressed with gzip, deflate,
lz4 or zstd (``Content-Encoding``) and chunked; results in the format the SQL
or ``default_format`` names (chDB renders them, Native included); inserts
``INSERT INTO t [(columns)] FORMAT <fmt>`` (or ``VALUES``) with the data after
the statement. Errors are ClickHouse's shape: ``Code: N. DB::Exception: ...``
with ``X-ClickHouse-Exception-Code``, so clickhouse-connect raises its own.

Two users, by basic auth or ``X-ClickHouse-User``/``X-ClickHouse-Key``:

- :data:`WRITER` runs what thumbline's own processes send (the rules of
  :mod:`thumbline.chrules`); a ``GET``, or ``readonly`` in the request, reads only.
- :data:`READER` runs the SQL sandbox (:mod:`thumbline.sandbox`): one SELECT
  over thumbline's database, with its limits; what
  ``THUMBLINE_CLICKHOUSE_READER_URL`` reaches on a server.

Sessions are not kept: each request stands alone (``session_id`` is accepted
and ignored), so temporary tables do not outlive their request.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import uuid
from base64 import b64decode
from collections.abc import Mapping
from typing import Any

import clickhouse_connect
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from thumbline.chrules import judge_writer, refused, setting_allowed, settings_of
from thumbline.chwire import (
    INSERT_START,
    MAX_CONCURRENT,
    MAX_SQL_BYTES,
    QUERY_ID,
    TRANSPORT,
    EndpointError,
    Recent,
    Reply,
    Request,
    Verbatim,
    content_type,
    error_reply,
    message,
    output_format,
    split_insert,
    statement_of,
)
from thumbline.errors import SqlRefused, StoreError
from thumbline.sandbox import Sandbox, open_sandbox_client
from thumbline.settings import Settings
from thumbline.sqlpool import ClientPool
from thumbline.sqltext import controls_outside_strings, unquoted
from thumbline.sqltree import parse_tree, quoted_identifiers_are_plain
from thumbline.store import store_error, with_faults

logger = logging.getLogger(__name__)

WRITER = "thumbline"
READER = "thumbline_reader"
#: What clickhouse-connect asks when it connects (canonical text): the reader may run these.
CONNECT_QUERIES = frozenset({
    "SELECT\n    version(),\n    timezone()",
    "SELECT\n    name,\n    value,\n    readonly\nFROM system.settings\nLIMIT 10000",
    "SELECT 1 AS check", "SELECT 1", "SELECT version()", "SELECT timezone()",
})  # fmt: skip
#: Largest body of the reader: a query and its parameters (a form), never an insert.
READER_MAX_BODY_BYTES = 4 * MAX_SQL_BYTES
#: Statements whose answer is a result set (the others run as commands).
_RESULTS = frozenset({
    "SelectWithUnionQuery", "DescribeQuery", "ExistsTableQuery", "ShowTables", "CheckQuery",
    "Explain",
})  # fmt: skip
#: The system tables a tool lists the catalog from (Grafana's query builder, DBeaver).
_CATALOG_TABLES = ("databases", "tables", "columns")
_CATALOG = re.compile(r"\bsystem\.(?:" + "|".join(_CATALOG_TABLES) + r")\b")
#: Functions whose right side may name a table (x IN t).
_IN_FUNCTIONS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin",
                           "globalnullin", "globalnotnullin"})  # fmt: skip
_FINAL_FORMAT = re.compile(r"\s+FORMAT ([A-Za-z][A-Za-z0-9_]*)\s*$")


def open_writer_client(settings: Settings) -> Client:
    """A client of the writer user: thumbline's database as the current one, no limits
    (thumbline's own statements: migrations may copy a table)."""
    try:
        return with_faults(
            clickhouse_connect.get_client(
                dsn=settings.store_url, database=settings.clickhouse_database
            ),
            settings,
        )
    except ClickHouseError as exc:
        raise store_error(exc, settings) from None


class StoreEndpoint:
    """Answers the HTTP interface's requests on the owner's chDB path; thread-safe.

    ``close()`` is safe to call twice.
    """

    def __init__(
        self, settings: Settings, *, writer_password: str, reader_password: str,
        writers: int = 2, readers: int = 2,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.database = settings.clickhouse_database
        self._passwords = {WRITER: writer_password, READER: reader_password}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.sandbox = Sandbox(settings)
        self._writers = ClientPool(settings, size=writers, opener=open_writer_client)
        try:
            self._readers = ClientPool(settings, size=readers, opener=open_sandbox_client)
        except BaseException:
            self._writers.close()
            raise
        self._timezone: str | None = None
        # ClickHouse's parse of recent statements: a worker sends the same few again and
        # again. Judged anew each time (the databases may change); only the parse is kept.
        self._canonicals: Recent[tuple[str, str | None]] = Recent(512)
        self._trees: Recent[Any] = Recent(512)

    def password(self, user: str) -> str:
        """The password of :data:`WRITER` or :data:`READER` (for the run file only)."""
        return self._passwords[user]

    def close(self) -> None:
        self._writers.close()
        self._readers.close()

    def user(self, request: Request) -> str:
        """The user the request authenticates as.

        Raises:
            EndpointError: no user, a wrong password, or a password in the URL.
        """
        if "password" in request.params:
            raise EndpointError(
                516, "send the password in basic auth or X-ClickHouse-Key, not in the URL "
                "(URLs are logged); it was not accepted",
            )  # fmt: skip
        name = request.headers.get("x-clickhouse-user") or request.params.get("user", "")
        password = request.headers.get("x-clickhouse-key", "")
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                name, _, password = b64decode(auth[6:], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
        expected = self._passwords.get(name)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            raise EndpointError(
                516, f"{name or 'default'}: Authentication failed: password is incorrect, or "
                f"there is no user with such name (the users are {WRITER} and {READER}; "
                "their passwords are in the run file)",
            )  # fmt: skip
        return name

    def body_limit(self, user: str) -> int | None:
        """The largest body ``user`` may send: the writer's inserts (None: the wire's
        bound, :data:`thumbline.chwire.MAX_BODY_BYTES`), the reader's SQL with its
        parameters (as a form)."""
        return None if user == WRITER else READER_MAX_BODY_BYTES

    def handle(self, request: Request) -> Reply:
        """Answer one request; never raises (errors are ClickHouse-shaped replies)."""
        asked = request.params.get("query_id")
        query_id = asked or str(uuid.uuid4())
        if not QUERY_ID.fullmatch(query_id):
            return self.error(EndpointError(36, "query_id takes 1 to 256 printable ASCII "
                                            "characters, no spaces"), "")  # fmt: skip
        started = time.monotonic()
        if not self._slots.acquire(blocking=False):
            return self.error(EndpointError(202, "too many requests at once; retry"), query_id)
        try:
            user = self.user(request)
            reply = self._run(request, user)
        except EndpointError as exc:
            return self.error(exc, query_id)
        except SqlRefused as exc:
            return self.error(EndpointError(exc.code or 497, str(exc)), query_id)
        except (StoreError, ClickHouseError) as exc:
            err = exc if isinstance(exc, StoreError) else store_error(exc, self.settings)
            return self.error(EndpointError(err.code or 1001, message(str(err))), query_id)
        finally:
            self._slots.release()
        elapsed = int((time.monotonic() - started) * 1e9)
        reply.headers.update(self._headers(query_id))
        reply.headers["X-ClickHouse-Summary"] = orjson.dumps(
            {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
             "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0",
             "elapsed_ns": str(elapsed)}
        ).decode()  # fmt: skip
        return reply

    # -- the request ---------------------------------------------------------------------

    def _run(self, request: Request, user: str) -> Reply:
        params = request.params
        if params.get("database", self.database) not in (self.database, ""):
            raise EndpointError(81, f"Database {params['database']} is not served here: "
                                f"only {self.database}")  # fmt: skip
        if params.get("compress", "0") != "0" or params.get("decompress", "0") != "0":
            raise EndpointError(
                1001, "ClickHouse's block compression (compress=1, decompress=1) is not read "
                "here: turn it off (the JDBC driver's compress=false); HTTP compression "
                "(Content-Encoding: gzip, lz4, zstd) is read",
            )  # fmt: skip
        settings = self._settings(params)
        parameters: dict[str, Any] = {  # as sent: chDB reads them as the HTTP interface does
            k.removeprefix("param_"): Verbatim(v) for k, v in params.items()
            if k.startswith("param_")
        }  # fmt: skip
        text = params.get("query", "").encode()
        data = text + (b"\n" if text and request.body else b"") + request.body
        readonly = request.method == "GET" or settings.pop("readonly", "0") != "0"
        if user == READER or readonly:
            if INSERT_START.match(data[:64]):
                raise EndpointError(164, "Cannot execute an INSERT: a GET request or this user "
                                    "only reads (use POST as the writer)")  # fmt: skip
            statement = statement_of(data)
            with self._readers.client() as client:
                return self._read(client, statement, params, parameters, user)
        with self._writers.client() as client:
            if INSERT_START.match(data[:64]):
                statement, fmt, block = split_insert(data)
                if block is not None:
                    return self._insert(client, statement, fmt, block, settings, parameters)
            return self._write(client, statement_of(data), params, settings, parameters)

    def _settings(self, params: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, value in params.items():
            if name in TRANSPORT or name.startswith("param_"):
                continue
            if not setting_allowed(name):
                raise EndpointError(164, f"Cannot modify '{name}' setting here: the endpoint "
                                    "takes format, insert and limit settings only")  # fmt: skip
            out[name] = value
        return out

    def _canonical(
        self, client: Client, statement: str, *, strip: bool = True
    ) -> tuple[str, str | None]:
        """The statement's canonical text without its final FORMAT, and that format."""
        return self._canonicals.get((statement, strip), lambda: self._format_query(
            client, statement, strip))  # fmt: skip

    def _format_query(self, client: Client, statement: str, strip: bool) -> tuple[str, str | None]:
        rows = client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
        canonical = str(rows.result_rows[0][0])
        # the tree is read line by line: no name may hold a line break (thumbline.sqltree)
        if not quoted_identifiers_are_plain(canonical) or controls_outside_strings(canonical):
            raise refused("names with control characters, backslashes or backquotes",
                          self.database)  # fmt: skip
        match = _FINAL_FORMAT.search(canonical) if strip else None
        if match is None:
            return canonical, None
        return canonical[: match.start()], match.group(1)

    def _read(
        self, client: Client, statement: str, params: Mapping[str, str],
        parameters: dict[str, Any], user: str,
    ) -> Reply:  # fmt: skip
        canonical, named = self._canonical(client, statement)
        fmt = output_format(named or params.get("default_format") or "TabSeparated")
        # no format asked: none appended (EXPLAIN AST would give it to the inner query)
        asked = fmt if named or params.get("default_format") else None
        if canonical in CONNECT_QUERIES:
            body = client.raw_query(canonical, fmt=asked)
        elif user == READER and not _CATALOG.search(unquoted(canonical)):
            checked = self.sandbox.check(client, canonical, parameters=parameters or None)
            body = self.sandbox.execute(client, checked, fmt=fmt)  # the sandbox's own way
        else:  # the writer reading, or a tool's catalog reads: the writer's rules, read-only
            kind = self._judge(client, canonical, parameters)
            if user == READER and not _only_catalog(self._tree(client, canonical, parameters)):
                what = "the reader reads system.databases, tables and columns alone, or "
                raise refused(what + "thumbline's tables in the SQL sandbox", self.database)
            if kind not in _RESULTS:
                raise EndpointError(164, "Cannot execute this query in readonly mode (a GET "
                                    "request, or readonly=1): use POST")  # fmt: skip
            body = client.raw_query(canonical, fmt=asked, parameters=parameters or None)
        return _result(body, fmt)

    def _write(
        self, client: Client, statement: str, params: Mapping[str, str],
        settings: dict[str, str], parameters: dict[str, Any],
    ) -> Reply:  # fmt: skip
        canonical, named = self._canonical(client, statement)
        kind = self._judge(client, canonical, parameters)
        if kind in _RESULTS:
            fmt = output_format(named or params.get("default_format") or "TabSeparated")
            asked = fmt if named or params.get("default_format") else None
            body = client.raw_query(
                canonical, fmt=asked, parameters=parameters or None, settings=settings or None
            )
            return _result(body, fmt)
        client.command(canonical, parameters=parameters or None, settings=settings or None)
        return Reply(200, b"", {"Content-Type": "text/plain; charset=UTF-8"})

    def _insert(
        self, client: Client, statement: str, fmt: str, block: bytes,
        settings: dict[str, str], parameters: dict[str, Any],
    ) -> Reply:  # fmt: skip
        canonical, _ = self._canonical(client, statement, strip=False)
        root = self._tree(client, canonical, parameters)
        self._judge_tree(client, root, canonical)
        names = [c.text for c in root.children if c.kind == "Identifier"]
        columns = next((c for c in root.children if c.kind == "ExpressionList"), None)
        if not 1 <= len(names) <= 2 or any(c.kind == "SelectWithUnionQuery" for c in root.children):
            raise refused("an INSERT with data names one table", self.database)
        table = ".".join(f"`{n}`" for n in ([self.database] if len(names) == 1 else []) + names)
        column_names = [c.text for c in columns.children] if columns is not None else None
        in_sql = {k: v.strip("'") for k, v in settings_of(canonical, self.database).items()}
        settings = {**in_sql, **settings}
        client.raw_insert(
            table, column_names=column_names, insert_block=block, settings=settings or None,
            fmt=output_format(fmt),
        )  # fmt: skip
        return Reply(200, b"", {"Content-Type": "text/plain; charset=UTF-8"})

    def _tree(self, client: Client, canonical: str, parameters: dict[str, Any]) -> Any:
        key = (canonical, tuple(sorted((k, str(v)) for k, v in parameters.items())))
        return self._trees.get(key, lambda: self._explain(client, canonical, parameters))

    def _explain(self, client: Client, canonical: str, parameters: dict[str, Any]) -> Any:
        settings_of(canonical, self.database)  # first: EXPLAIN applies a SETTINGS clause
        text = client.command(f"EXPLAIN AST {canonical}", parameters=parameters or None)
        if not isinstance(text, str):
            raise refused("the statement has no tree to check", self.database)
        return parse_tree(text)

    def _judge(self, client: Client, canonical: str, parameters: dict[str, Any]) -> str:
        return self._judge_tree(client, self._tree(client, canonical, parameters), canonical)

    def _judge_tree(self, client: Client, root: Any, canonical: str) -> str:
        rows = client.query("SELECT name FROM system.databases").result_rows
        databases = [str(r[0]) for r in rows]
        return judge_writer(
            root, canonical, database=self.database, databases=databases,
            denied_functions=self.sandbox.denied_functions(client),
        )  # fmt: skip

    # -- the reply -----------------------------------------------------------------------

    def _headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.timezone(),
            "X-ClickHouse-Server-Display-Name": "thumbline",
        }

    def timezone(self) -> str:
        """The store's time zone (asked once)."""
        if self._timezone is None:
            try:
                with self._readers.client() as client:
                    self._timezone = str(client.query("SELECT timezone()").result_rows[0][0])
            except (ClickHouseError, StoreError):
                return "UTC"
        return self._timezone

    def error(self, exc: EndpointError, query_id: str) -> Reply:
        """A ClickHouse-shaped error reply, secrets masked."""
        return error_reply(exc, query_id, self.settings.mask)


def _result(body: bytes | bytearray | memoryview, fmt: str) -> Reply:
    return Reply(200, bytes(body), {"X-ClickHouse-Format": fmt, "Content-Type": content_type(fmt)})


def _only_catalog(root: Any) -> bool:
    """Whether every table the statement's tree (``EXPLAIN AST``) names is a catalog table
    of ``system``, and it names one: thumbline's tables are read through the sandbox.

    Read from the tree, not the text: a table after a comma (``FROM system.tables, t``)
    or on the right of ``IN`` names no ``FROM`` or ``JOIN``.
    """
    tables = [node.text for node in root.walk() if node.kind == "TableIdentifier"]
    for node in root.walk():  # x IN t: t is an Identifier in the tree
        if node.kind == "Function" and node.text.split(" ", 1)[0].lower() in _IN_FUNCTIONS:
            arguments = node.children[0].children if node.children else []
            tables += [a.text for a in arguments[1:] if a.kind == "Identifier"]
    catalog = {f"system.{name}" for name in _CATALOG_TABLES}
    return bool(tables) and all(t.lower() in catalog for t in tables)
