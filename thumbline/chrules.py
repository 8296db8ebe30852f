"""What the store endpoint's writer may run: thumbline's own statements, in its database only.

The writer user of :mod:`thumbline.chhttp` is what a ``thumbline worker`` on
this machine sends as its main ClickHouse user: queries, inserts, and the
migrations' DDL (:func:`thumbline.store.apply_migrations`). chDB runs inside
the owner's process with its rights and has no users or grants, so these rules
are the wall, read from ClickHouse's own parse (``EXPLAIN AST`` of the
``formatQuery`` text, as :mod:`thumbline.sqltree` reads it):

- statements: SELECT, INSERT into a table, CREATE TABLE / VIEW / MATERIALIZED
  VIEW, CREATE DATABASE of thumbline's database, ALTER TABLE (a listed set of
  commands), DROP TABLE / VIEW, TRUNCATE, RENAME / EXCHANGE TABLES, OPTIMIZE,
  DELETE, DESCRIBE, EXISTS, SHOW TABLES, CHECK TABLE, EXPLAIN of a SELECT;
- no other database (but a few system tables a client reads to connect and
  the migrations read), no table function, no table engine but MergeTree's,
  Memory's, Null's and views, no function that reaches files, the network,
  dictionaries or the server, no ``INTO OUTFILE`` / ``FROM INFILE``;
- settings (in the SQL or the URL) only from :func:`setting_allowed`, with
  plain literal values: no ``disk = disk(path = ...)``, no schema files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from thumbline.errors import SqlRefused
from thumbline.sqltext import unquoted
from thumbline.sqltree import Node

#: Tables of ``system`` that clients read to connect and the migrations read.
SYSTEM_TABLES = frozenset({
    "settings", "tables", "columns", "databases", "functions", "one", "parts", "mutations",
    "merges", "time_zones", "build_options", "data_type_families", "formats", "table_engines",
})  # fmt: skip
#: Table engines the writer may create (the store's own files, nothing outside).
ENGINES = frozenset({
    "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
    "CollapsingMergeTree", "VersionedCollapsingMergeTree", "CoalescingMergeTree", "Memory",
    "Null",
})  # fmt: skip
ALTER_COMMANDS = frozenset({
    "ADD_COLUMN", "DROP_COLUMN", "MODIFY_COLUMN", "COMMENT_COLUMN", "RENAME_COLUMN",
    "MATERIALIZE_COLUMN", "ADD_INDEX", "DROP_INDEX", "MATERIALIZE_INDEX", "CLEAR_INDEX",
    "ADD_PROJECTION", "DROP_PROJECTION", "MATERIALIZE_PROJECTION", "CLEAR_PROJECTION",
    "MODIFY_ORDER_BY", "MODIFY_TTL", "REMOVE_TTL", "MATERIALIZE_TTL", "MODIFY_SETTING",
    "RESET_SETTING", "MODIFY_QUERY", "DELETE", "UPDATE", "DROP_PARTITION", "COMMENT",
    "MODIFY_COMMENT",
})  # fmt: skip
#: Statement kinds (as the tree's root prints them) and the canonical text's start.
STATEMENTS: dict[str, re.Pattern[str]] = {
    "SelectWithUnionQuery": re.compile(r"(SELECT|WITH)\b|\("),
    "InsertQuery": re.compile(r"INSERT INTO "),
    "CreateQuery": re.compile(
        r"CREATE (OR REPLACE )?(TABLE|VIEW|MATERIALIZED VIEW|DATABASE) (IF NOT EXISTS )?"
    ),
    "AlterQuery": re.compile(r"ALTER TABLE "),
    "DropQuery": re.compile(r"DROP (TABLE|VIEW) "),
    "TruncateQuery": re.compile(r"TRUNCATE TABLE "),
    "Rename": re.compile(r"(RENAME TABLE|EXCHANGE TABLES) "),
    "OptimizeQuery": re.compile(r"OPTIMIZE TABLE "),
    "DeleteQuery": re.compile(r"DELETE FROM "),
    "DescribeQuery": re.compile(r"DESCRIBE "),
    "ExistsTableQuery": re.compile(r"EXISTS TABLE "),
    "ShowTables": re.compile(r"SHOW TABLES$"),  # the current database's only
    "CheckQuery": re.compile(r"CHECK TABLE "),
    "Explain": re.compile(r"EXPLAIN (PLAN |SYNTAX |PIPELINE |ESTIMATE )?"),
}
#: Kinds that reach outside the store wherever they sit.
_DENIED_KINDS = frozenset({"Dictionary", "FunctionWithKeyValueArguments"})
#: Query settings the endpoint takes (the rest refused, as a readonly server would).
QUERY_SETTINGS = frozenset({
    "date_time_input_format", "date_time_output_format", "cast_string_to_dynamic_use_inference",
    "insert_deduplicate", "insert_deduplication_token", "async_insert", "wait_for_async_insert",
    "max_block_size", "max_insert_block_size", "min_insert_block_size_rows",
    "min_insert_block_size_bytes", "mutations_sync", "lightweight_deletes_sync", "alter_sync",
    "join_use_nulls", "final", "max_threads", "optimize_throw_if_noop", "allow_nullable_key",
    "max_execution_time", "max_result_rows", "max_result_bytes", "max_memory_usage",
    "timeout_overflow_mode", "result_overflow_mode", "readonly", "session_timezone",
    "enable_json_type", "allow_experimental_json_type", "extremes", "totals_mode",
    "use_query_cache", "prefer_column_name_to_alias", "aggregate_functions_null_for_empty",
    "enable_lightweight_delete", "allow_experimental_lightweight_delete",
    # MergeTree settings of CREATE TABLE ... SETTINGS
    "non_replicated_deduplication_window", "index_granularity", "index_granularity_bytes",
    "ttl_only_drop_parts", "merge_with_ttl_timeout", "min_age_to_force_merge_seconds",
    "min_bytes_for_wide_part", "enable_block_number_column", "enable_block_offset_column",
    "deduplicate_merge_projection_mode", "lightweight_mutation_projection_mode",
})  # fmt: skip
_FORMAT_PREFIXES = ("input_format_", "output_format_", "format_csv_", "format_tsv_")
#: Words in a setting's name that point at files, paths or the network.
_RISKY_WORDS = ("schema", "template", "path", "file", "dir", "disk", "url", "s3", "storage")

_SETTING = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*) = ('(?:[^'\\\n]|\\.)*'|-?[0-9][0-9.eE+-]*|[A-Za-z_]+)"
)
_SETTINGS_CLAUSE = re.compile(r"\bSETTINGS?\b")  # ALTER ... MODIFY SETTING too
_CLAUSES = re.compile(r"\b(INTO\s+OUTFILE|FROM\s+INFILE|COMPRESSION)\b")


def setting_allowed(name: str) -> bool:
    """Whether the endpoint takes setting ``name`` (URL parameter or SETTINGS clause)."""
    if any(word in name for word in _RISKY_WORDS):
        return False
    return name in QUERY_SETTINGS or name.startswith(_FORMAT_PREFIXES)


def refused(what: str, database: str) -> SqlRefused:
    return SqlRefused(
        f"refused by thumbline's store endpoint: {what}; the writer runs thumbline's own "
        f"statements (queries, inserts, the migrations' DDL) on the {database} database only",
        reason="writer",
    )


def settings_of(canonical: str, database: str) -> dict[str, str]:
    """Every ``SETTINGS`` clause's names and values of ``canonical`` (formatQuery text).

    Raises:
        SqlRefused: a setting not allowed, or a value that is not a plain literal.
    """
    found: dict[str, str] = {}
    plain = unquoted(canonical)
    for match in _SETTINGS_CLAUSE.finditer(plain):
        line_end = canonical.find("\n", match.end())
        rest = canonical[match.end() : len(canonical) if line_end < 0 else line_end].strip()
        rest = rest.removesuffix(",").removesuffix(")")  # ALTER t (MODIFY SETTING a = 1),
        pos = 0
        while True:
            item = _SETTING.match(rest, pos)
            if item is None:
                raise refused("SETTINGS take plain literal values (name = 1, name = 'x')", database)
            name = item.group(1)
            if not setting_allowed(name):
                raise refused(f"setting {name} is not allowed", database)
            found[name] = item.group(2)
            pos = item.end()
            if pos == len(rest):
                break
            if not rest.startswith(", ", pos):
                raise refused("SETTINGS take plain literal values (name = 1, name = 'x')", database)
            pos += 2
    return found


def judge_writer(
    root: Node, canonical: str, *, database: str, databases: Iterable[str],
    denied_functions: frozenset[str],
) -> str:  # fmt: skip
    """Accept one statement of the writer, or refuse it; returns the root's kind.

    Raises:
        SqlRefused: what was refused, and what the writer runs.
    """
    kind = root.kind
    start = STATEMENTS.get(kind)
    if start is None or not start.match(canonical):
        shown = kind.removesuffix("Query") or "this"
        raise refused(f"{shown} statements are not allowed ({canonical[:40]!r})", database)
    clause = _CLAUSES.search(unquoted(canonical))
    if clause is not None:
        raise refused(f"{' '.join(clause.group(1).split())} is not allowed", database)
    if kind == "CreateQuery" and canonical.startswith("CREATE DATABASE "):
        names = [c.text for c in root.children if c.kind == "Identifier"]
        if names != [database]:
            raise refused(f"only the {database} database may be created", database)
    others = {d.lower() for d in databases} - {database.lower()}
    for node in root.walk():
        _judge_node(node, database, others, denied_functions)
    for child in root.children:  # INSERT INTO FUNCTION, CREATE TABLE AS table function
        if child.kind == "Function" and kind in ("InsertQuery", "CreateQuery"):
            raise refused(f"table function {child.text}() is not allowed", database)
    settings_of(canonical, database)
    return kind


def _judge_node(node: Node, database: str, others: set[str], denied: frozenset[str]) -> None:
    kind = node.kind
    if kind in _DENIED_KINDS:
        raise refused("dictionaries are not allowed (their sources read files and URLs)", database)
    if kind == "TableExpression":
        first = node.children[0] if node.children else None
        if first is None or first.kind not in ("TableIdentifier", "Subquery"):
            name = first.text if first is not None else "?"
            raise refused(f"table function {name}() is not allowed", database)
    elif kind in ("TableIdentifier", "Identifier"):
        head, dot, tail = node.text.partition(".")
        lower = head.lower()
        if lower == "system" and dot:
            if tail.split(".", 1)[0] not in SYSTEM_TABLES:
                raise refused(f"{node.text} is not readable here", database)
        elif lower in others or lower in ("system", "information_schema"):
            raise refused(f"{node.text} is outside the {database} database", database)
    elif kind == "Function":
        name = node.text.split(" ", 1)[0]
        if name.lower() in denied or name.startswith("__") or name.lower() == "disk":
            raise refused(f"{name}() reaches outside the database", database)
    elif kind == "Storage" and node.text == "definition":
        engine = node.children[0] if node.children else None
        if engine is not None and engine.kind == "Function" and engine.text not in ENGINES:
            raise refused(
                f"engine {engine.text} is not allowed (use one of {', '.join(sorted(ENGINES))})",
                database,
            )
    elif kind == "AlterCommand":
        command = node.text.split(" ", 1)[0]
        if command not in ALTER_COMMANDS:
            raise refused(f"ALTER {command} is not allowed", database)
