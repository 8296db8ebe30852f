"""The SQL sandbox: SQL from keys and the CLI reads thumbline's database and nothing else.

Two walls, the first enforced by ClickHouse itself:

1. **The client.** Every such query runs on a client made by
   :func:`open_sandbox_client`: ``readonly=1`` (no writes, no DDL, no
   settings, no table functions), the limits of the ``THUMBLINE_SQL_MAX_*``
   settings, and thumbline's database as the current one. On a ClickHouse
   server with ``THUMBLINE_CLICKHOUSE_READER_URL``, that is a user of its own
   whose grants and profile say the same.
2. **The checker.** :meth:`Sandbox.check` has ClickHouse parse the text
   (``formatQuery`` refuses several statements and gives the canonical text),
   reads ``EXPLAIN AST`` of that canonical text and judges the tree
   (:mod:`thumbline.sqltree`): one SELECT, EXPLAIN or DESCRIBE over the
   database's tables and views, no table function, no function that reaches
   files, the network, dictionaries or the server, no SETTINGS, no output
   clause. Views are judged through their definitions. What runs is the
   canonical text that was judged, never the text that came in.

``readonly=1`` alone still lets ``SELECT file(...)``, ``INTO OUTFILE`` and
``KILL QUERY`` through in chDB, and chDB has no users or grants: the checker is
what stops those there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.binding import bind_query
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from thumbline.errors import SqlRefused, StoreError, StoreUnavailable
from thumbline.outages import outage
from thumbline.settings import Settings
from thumbline.sqltext import controls_outside_strings, output_clause
from thumbline.sqltree import (
    Catalog,
    Kind,
    allowed,
    judge,
    parse_tree,
    quoted_identifiers_are_plain,
)
from thumbline.store import store_error, with_faults

logger = logging.getLogger(__name__)

MAX_SQL_BYTES = 1_000_000
#: ClickHouse's codes for a query stopped at a limit (time, rows, bytes, memory).
LIMIT_CODES = frozenset({158, 159, 160, 241, 307, 396})
READONLY = 164

#: Functions that reach outside the database, by lower-case name: files, the server's
#: configuration and host, other tables, model files, the network (AI functions).
DENIED_FUNCTIONS = frozenset({
    "file", "getserversetting", "logtrace", "catboostevaluate", "modelevaluate",
    "evalmlmethod", "showcertificate", "getclienthttpheader", "hascolumnintable", "getmacro",
    "getoskernelversion", "hostname", "fqdn", "fullhostname", "serveruuid", "getserverport",
    "tcpport", "displayname", "generateserialid", "currentrequesturl", "zookeepersessionuptime",
    "buildid", "addresstoline", "addresstolinewithinlines", "addresstosymbol", "demangle",
})  # fmt: skip
DENIED_PREFIXES = ("__", "dict", "joinget", "filesystem", "naivebayes", "catboost")
DENIED_CATEGORIES = frozenset(
    {"Dictionary", "Embedded Dictionary", "Introspection", "AI", "Machine Learning"}
)
#: Engines whose tables the sandbox reads (views are judged through their definitions).
#: a Distributed table is how a cluster's tables are read and written (thumbline.cluster)
READ_ENGINES = ("MergeTree", "Memory", "Distributed")


#: What the sandbox wraps a user's SQL in on its way to ClickHouse, which quotes it back in
#: errors: the output format clickhouse-connect appends, the checker's formatQuery('...')
#: and EXPLAIN AST. The user gets their own SQL back.
_APPENDED_FORMAT = re.compile(
    r"\s+FORMAT\s+(?:JSONCompact|JSONEachRow|JSON|CSVWithNames|TabSeparatedWithNames|Pretty"
    r"|Native|TabSeparated)\b"
)
_FORMAT_QUERY = re.compile(r"SELECT formatQuery\('((?:[^'\\]|\\.)*)'\)")
_EXPLAIN = re.compile(r"\bEXPLAIN AST ")


def unwrapped(message: str) -> str:
    """``message`` with the sandbox's wrappers around the user's SQL taken out."""
    message = _APPENDED_FORMAT.sub("", message)
    message = _FORMAT_QUERY.sub(lambda m: re.sub(r"\\(.)", r"\1", m.group(1)), message)
    return _EXPLAIN.sub("", message)


def _unwrapped_error(exc: BaseException, settings: Settings) -> StoreError:
    """The store's error for SQL people sent: retriable only when the store could not
    serve it (:func:`thumbline.outages.outage`), in the user's words."""
    err = store_error(exc, settings)
    kind = type(err)
    if kind is StoreUnavailable and not outage(exc, err.code):
        kind = StoreError  # the statement's own fault: 400, not 503
    return kind(unwrapped(str(err)), code=err.code)


@dataclass(frozen=True, slots=True)
class Checked:
    """SQL the sandbox accepted: the canonical text to run (never the text that came in)."""

    text: str
    kind: Kind
    parameters: dict[str, Any] | None = None


def limits(settings: Settings) -> dict[str, str]:
    """The ClickHouse settings of the sandbox's limits (before ``readonly``: it freezes them)."""
    return {
        "max_execution_time": f"{settings.sql_max_seconds:g}",
        "timeout_overflow_mode": "throw",
        "max_result_rows": str(settings.sql_max_result_rows),
        "max_result_bytes": str(settings.sql_max_result_bytes),
        "result_overflow_mode": "throw",
        "max_memory_usage": str(settings.sql_max_memory_bytes),
    }


def open_sandbox_client(settings: Settings) -> Client:
    """A read-only client with the sandbox's limits, its current database thumbline's.

    chDB: ``readonly=1`` and the limits. A server: the reader user when
    ``THUMBLINE_CLICKHOUSE_READER_URL`` is set (its profile holds readonly and
    the limits), else the main user with ``readonly=1`` and the limits.
    Use one client per thread.

    Raises:
        StoreLocked: the chDB path is open in another process.
        StoreError: the store cannot be reached.
    """
    url, extra = settings.store_url, {**limits(settings), "readonly": "1"}
    if settings.reader_url is not None:
        url, extra = settings.reader_url, {}
    try:
        return with_faults(
            clickhouse_connect.get_client(
                dsn=url, database=settings.clickhouse_database, settings=extra
            ),
            settings,
        )
    except ClickHouseError as exc:
        raise store_error(exc, settings) from None


def open_insert_client(settings: Settings) -> Client:
    """A writing client for checked ``INSERT ... SELECT`` (write mode), with the limits.

    Its current database is thumbline's, so the names its SELECT leaves
    unqualified resolve there (chDB's ``default`` database reads files by name).
    """
    try:
        return with_faults(
            clickhouse_connect.get_client(
                dsn=settings.store_url,
                database=settings.clickhouse_database,
                settings=limits(settings),
            ),  # fmt: skip
            settings,
        )
    except ClickHouseError as exc:
        raise store_error(exc, settings) from None


def warn_if_unwalled(settings: Settings) -> None:
    """Say at start when a server store has no reader user (the checker is then the wall)."""
    if not settings.store_is_chdb and settings.reader_url is None:
        logger.warning(
            "THUMBLINE_CLICKHOUSE_READER_URL is not set: SQL from keys and the CLI runs as the "
            "main ClickHouse user with readonly=1; create a read-only user with SELECT on %s "
            "only (docker-compose.yml has one) so the server enforces the sandbox too",
            settings.clickhouse_database,
        )


class Sandbox:
    """Checks and runs SQL from outside on sandbox clients; thread-safe.

    What it knows of the store (tables, views and whether each view's
    definition passes, databases, functions) is read with the caller's client
    and kept until the tables of the database change.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self._lock = threading.Lock()
        self._functions: frozenset[str] | None = None
        self._catalog: tuple[tuple[Any, ...], Catalog] | None = None

    def check(
        self, client: Client, sql: str, *, parameters: dict[str, Any] | None = None,
        write: bool = False,
    ) -> Checked:  # fmt: skip
        """Accept ``sql`` as one statement the sandbox runs, or refuse it.

        ``write`` also accepts ``INSERT INTO <db>.<table> [(columns)] SELECT ...``.
        ``parameters`` are bound by ClickHouse (``{name:Type}``) both when the
        tree is read and when the query runs, so both see the same statement.

        Raises:
            SqlRefused: what was refused and why.
            StoreError: the store did not answer the checker's own queries.
        """
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise self._refused(f"SQL longer than {MAX_SQL_BYTES} bytes", "too_long")
        if any(ord(ch) < 0x20 and ch not in "\t\n\r" or ch == "\x7f" for ch in sql):
            raise self._refused("control characters in the SQL", "characters")
        canonical = self._canonical(client, sql)
        if parameters:
            bound, _ = bind_query(canonical, parameters)
            if bound != canonical:  # the driver would format the text itself
                raise self._refused("parameters need {name:Type} placeholders", "parameters")
        verdict = judge(self._tree(client, canonical, parameters), self._catalog_of(client),
                        write=write)  # fmt: skip
        return Checked(canonical, verdict.kind, parameters or None)

    def run(
        self, client: Client, sql: str, *, fmt: str, parameters: dict[str, Any] | None = None
    ) -> bytes:
        """Check ``sql`` and run it on ``client`` (a sandbox client); ClickHouse's output.
        ``parameters`` are bound by ClickHouse to its ``{name:Type}`` placeholders."""
        checked = self.check(client, sql, parameters=parameters)
        return self.execute(client, checked, fmt=fmt)

    def execute(self, client: Client, checked: Checked, *, fmt: str) -> bytes:
        """Run checked SQL; ``client`` is a sandbox client, or an insert client for inserts."""
        try:
            return bytes(client.raw_query(checked.text, fmt=fmt, parameters=checked.parameters))
        except ClickHouseError as exc:
            raise self.error(exc) from None

    def error(self, exc: ClickHouseError) -> StoreError:
        """A driver error as a StoreError; a limit reached is a SqlRefused naming the setting."""
        err = _unwrapped_error(exc, self.settings)
        if err.code in LIMIT_CODES:
            s = self.settings
            return SqlRefused(
                f"stopped at a limit of the SQL sandbox (THUMBLINE_SQL_MAX_SECONDS="
                f"{s.sql_max_seconds:g}, THUMBLINE_SQL_MAX_RESULT_ROWS={s.sql_max_result_rows}, "
                f"THUMBLINE_SQL_MAX_RESULT_BYTES={s.sql_max_result_bytes}, "
                f"THUMBLINE_SQL_MAX_MEMORY_BYTES={s.sql_max_memory_bytes}): {err}",
                reason="limit", code=err.code,
            )  # fmt: skip
        return err

    def _refused(self, what: str, reason: str, code: int | None = None) -> SqlRefused:
        return SqlRefused(f"refused: {what}; {allowed(self.database)}", reason=reason, code=code)

    # The checker's own queries ---------------------------------------------

    def _canonical(self, client: Client, sql: str) -> str:
        try:
            rows = client.query("SELECT formatQuery({q:String})", parameters={"q": sql})
        except ClickHouseError as exc:
            err = _unwrapped_error(exc, self.settings)
            if err.retriable:  # the store did not answer: no verdict on the SQL
                raise err from None
            raise self._refused(
                f"ClickHouse could not read it as one statement ({err})", "syntax", err.code
            ) from None
        canonical = str(rows.result_rows[0][0])
        if not quoted_identifiers_are_plain(canonical) or controls_outside_strings(canonical):
            raise self._refused(
                "names with control characters, backslashes or backquotes", "characters"
            )
        clause = output_clause(canonical)
        if clause is not None:  # EXPLAIN AST does not always show these (UNION DISTINCT)
            raise self._refused(
                f"{clause} is not allowed (the endpoint picks the format; the limits are the "
                "server's)", "output" if clause != "SETTINGS" else "settings",
            )  # fmt: skip
        return canonical

    def _tree(self, client: Client, canonical: str, parameters: dict[str, Any] | None) -> Any:
        try:
            text = client.command(f"EXPLAIN AST {canonical}", parameters=parameters or None)
        except ClickHouseError as exc:
            err = _unwrapped_error(exc, self.settings)
            if err.retriable:  # the store did not answer: no verdict on the SQL
                raise err from None
            if err.code == READONLY:  # EXPLAIN applies a SETTINGS clause, which readonly refuses
                raise self._refused(
                    "SETTINGS clauses are not allowed (the limits are the server's: "
                    "THUMBLINE_SQL_MAX_*)", "settings", err.code,
                ) from None  # fmt: skip
            raise self._refused(
                f"ClickHouse could not explain it ({err})", "syntax", err.code
            ) from None
        if not isinstance(text, str):
            raise self._refused("the statement has no tree to check", "construct")
        return parse_tree(text)

    def _catalog_of(self, client: Client) -> Catalog:
        """The catalog, rebuilt when the database's tables or view definitions change."""
        try:
            rows = client.query(
                "SELECT 'database', name, '', '' FROM system.databases UNION ALL "
                "SELECT 'table', name, engine, as_select FROM system.tables "
                "WHERE database = {db:String}",
                parameters={"db": self.database},
            ).result_rows
        except ClickHouseError as exc:
            raise _unwrapped_error(exc, self.settings) from None
        key = tuple(sorted(tuple(r) for r in rows))
        with self._lock:
            if self._catalog is not None and self._catalog[0] == key:
                return self._catalog[1]
        catalog = self._build(client, rows)
        with self._lock:
            self._catalog = (key, catalog)
        return catalog

    def _build(self, client: Client, rows: Sequence[Sequence[Any]]) -> Catalog:
        databases = frozenset(str(r[1]).lower() for r in rows if r[0] == "database")
        objects = {str(r[1]): (str(r[2]), str(r[3])) for r in rows if r[0] == "table"}
        tables = {n for n, (engine, _) in objects.items() if engine.endswith(READ_ENGINES)}
        views = {n: body for n, (engine, body) in objects.items() if engine == "View"}
        # on a cluster, rows go in through the Distributed table, which puts them on the
        # shard of their key: never straight into one host's <table>_local
        writable = {
            n for n in tables if objects[n][0].endswith(("MergeTree", "Distributed"))
            and not (n.endswith("_local") and objects.get(n[:-6], ("",))[0] == "Distributed")
        }  # fmt: skip
        first = Catalog(
            self.database, readable=frozenset(tables | views.keys()),
            refused=frozenset(objects.keys() - tables - views.keys()),
            writable=frozenset(writable - {"schema_migrations"}), databases=databases,
            denied_functions=self._denied_functions(client),
        )  # fmt: skip
        bad, uses = set(), {}
        for name, body in views.items():  # each definition judged like a query
            try:
                verdict = judge(self._tree(client, self._canonical(client, body), None), first)
            except SqlRefused as exc:
                logger.info("the SQL sandbox does not read view %s: %s", name, exc)
                bad.add(name)
                continue
            uses[name] = verdict.tables & views.keys()
        while True:  # a view over a refused view is refused too
            more = {n for n in views.keys() - bad if uses[n] & bad}
            if not more:
                break
            bad |= more
        readable = tables | (views.keys() - bad)
        return Catalog(
            self.database, readable=frozenset(readable),
            refused=frozenset(objects.keys() - readable), writable=first.writable,
            databases=databases, denied_functions=first.denied_functions,
        )  # fmt: skip

    def denied_functions(self, client: Client) -> frozenset[str]:
        """Lower-case names of the functions that reach outside the database."""
        return self._denied_functions(client)

    def _denied_functions(self, client: Client) -> frozenset[str]:
        """DENIED_FUNCTIONS, grown with the server's own list (aliases, categories, UDFs)."""
        if self._functions is not None:
            return self._functions
        try:
            rows = client.query(
                "SELECT name, alias_to, origin, categories FROM system.functions"
            ).result_rows
        except ClickHouseError:  # a server without the categories column
            rows = [
                (*r, "")
                for r in client.query(
                    "SELECT name, alias_to, origin FROM system.functions"
                ).result_rows
            ]

        found = set(DENIED_FUNCTIONS)
        for name, _, origin, category in rows:
            lower = str(name).lower()
            if (
                lower.startswith(DENIED_PREFIXES) or str(category) in DENIED_CATEGORIES
                or str(origin) != "System"  # user-defined: SQL or an executable
            ):  # fmt: skip
                found.add(lower)
        found |= {str(n).lower() for n, alias_to, *_ in rows if str(alias_to).lower() in found}
        self._functions = frozenset(found)
        return self._functions
