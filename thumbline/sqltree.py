"""What one SQL statement touches, read from ClickHouse's own parse of it.

The sandbox (:mod:`thumbline.sandbox`) asks ClickHouse for ``EXPLAIN AST`` of
the statement's canonical text (``formatQuery``); this module reads that tree
and judges it, without a server, so its rules are tested on captured trees.

The tree comes as one line per node: an indent of one space per level, the
node's kind, its payload (a name, a literal), ``(alias x)`` and
``(children N)``. A line that does not fit that grammar, a count that does
not match the lines below it, or a node kind not listed here is refused. The
sandbox first makes sure no quoted identifier holds a line break (see
:func:`quoted_identifiers_are_plain`), so every line is one node; the rules
are written so that even an extra line could not hide a real one: each is
either checked on every node wherever it sits (functions, tables, settings),
or on the line right after one whose text no user controls (a table
expression's first child).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from thumbline.errors import SqlRefused

Kind = Literal["select", "explain", "describe", "insert"]

_LINE = re.compile(r"^( *)(\S+)(.*?)(?: \(children ([1-9][0-9]*)\))?$")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TSV_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a",
                "v": "\v", "e": "\x1b"}  # fmt: skip

#: Node kinds a SELECT may hold. Anything else (Set, an output clause's node, a
#: query parameter left unbound, APPLY(function), DDL...) is refused.
BODY_KINDS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList",
    "Identifier", "Function", "Literal", "Asterisk", "QualifiedAsterisk",
    "ColumnsRegexpMatcher", "ColumnsListMatcher", "QualifiedColumnsRegexpMatcher",
    "QualifiedColumnsListMatcher", "ColumnsTransformerList", "ColumnsExceptTransformer",
    "ColumnsReplaceTransformer", "ColumnsReplaceTransformer::Replacement",
    "TablesInSelectQuery", "TablesInSelectQueryElement", "TableExpression", "TableIdentifier",
    "TableJoin", "ArrayJoin", "Subquery", "WithElement", "OrderByElement", "WindowDefinition",
    "WindowListElement", "SampleRatio", "InterpolateElement",
})  # fmt: skip

#: EXPLAIN kinds, as the tree prints them (EXPLAIN PLAN prints as EXPLAIN). EXPLAIN AST
#: is left out: ClickHouse gives its output clause to the inner query, so it ignores FORMAT.
EXPLAIN_KINDS = frozenset({
    "EXPLAIN", "EXPLAIN SYNTAX", "EXPLAIN QUERY TREE", "EXPLAIN PIPELINE", "EXPLAIN ESTIMATE",
})  # fmt: skip


def allowed(database: str, *, write: bool = False) -> str:
    """What the sandbox runs, for the end of every refusal."""
    text = (
        f"the SQL sandbox runs one SELECT (WITH, UNION, INTERSECT, EXCEPT), an EXPLAIN "
        f"[PLAN|SYNTAX|QUERY TREE|PIPELINE|ESTIMATE] of one, or DESCRIBE of a table, over the "
        f"{database} database only: no table functions, files, settings or output clauses"
    )
    if write:
        text += f"; write mode also takes INSERT INTO {database}.<table> [(columns)] SELECT ..."  # noqa: S608 (a message)
    return text


@dataclass(frozen=True, slots=True)
class Node:
    """One node of ``EXPLAIN AST``: its kind, payload (a name, a value) and alias."""

    kind: str
    text: str = ""
    alias: str | None = None
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first (no recursion: trees may be deep)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the sandbox knows of the store when it judges a statement.

    ``readable``: tables and views of ``database`` that may be read (views
    whose definitions pass the same rules). ``refused``: the other objects of
    ``database`` (other engines, views that read elsewhere). ``writable``:
    tables that take ``INSERT ... SELECT`` in write mode. ``databases``: every
    database name, in lower case. ``denied_functions``: lower-case names of functions that
    reach files, the network, dictionaries, other tables or the server.
    """

    database: str
    readable: frozenset[str]
    refused: frozenset[str] = frozenset()
    writable: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset()
    denied_functions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Verdict:
    """A statement the rules accept: its kind and the tables of ``database`` it names."""

    kind: Kind
    tables: frozenset[str]


def unescape_tsv(line: str) -> str:
    """One TabSeparated value as text (``EXPLAIN AST`` comes back in that format)."""
    if "\\" not in line:
        return line
    out, chars = [], iter(line)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "\\")
            out.append(_TSV_ESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def quoted_identifiers_are_plain(canonical: str) -> bool:
    """Whether no quoted identifier of ``formatQuery`` output holds an escape sequence.

    ClickHouse's formatter writes identifiers with special characters (a line
    break, a tab, a backquote) in backquotes with backslash escapes, and
    ``EXPLAIN AST`` prints them decoded: a line break there would start a line
    of the tree that no node made. Strings are escaped in that output, so only
    identifiers matter. An unbalanced quote also answers False.
    """
    quote: str | None = None
    escaped = False
    for ch in canonical:
        if escaped:
            escaped = False
        elif quote is None:
            if ch in "'`\"":
                quote = ch
        elif ch == "\\":
            if quote != "'":
                return False
            escaped = True
        elif ch == quote:
            quote = None
    return quote is None


def _controls(text: str, allowed: str) -> bool:
    """Whether ``text`` holds control characters; ``allowed`` non-empty: a literal's line,
    where all but line breaks are the string's own (a filter value with a bell in it)."""
    if allowed:
        return "\n" in text or "\r" in text
    return any(ord(ch) < 0x20 or ch == "\x7f" for ch in text)


def parse_tree(text: str) -> Node:
    """The tree of ``EXPLAIN AST`` output (TabSeparated text, one node a line).

    Raises:
        SqlRefused: a line does not fit the grammar or the counts do not add up.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    parsed: list[tuple[int, Node, int]] = []
    for raw in lines:
        line = unescape_tsv(raw)
        match = _LINE.match(line)
        if match is None or _controls(line, allowed="" if match.group(2) != "Literal" else "\a"):
            raise _shape(raw)
        indent, kind, rest, count = match.groups()
        payload, alias = _split_alias(rest.strip())
        if kind == "Explain":
            payload = rest.strip()
        parsed.append((len(indent), Node(kind, payload, alias, []), int(count or 0)))
    if not parsed or parsed[0][0] != 0:
        raise _shape(lines[0] if lines else "(nothing)")
    # Rebuild: each node takes exactly its declared count of children at depth + 1.
    stack: list[tuple[int, Node, int]] = []
    root = parsed[0][1]
    for depth, node, count in parsed:
        if stack:
            parent_depth, parent, wanted = stack[-1]
            if depth != parent_depth + 1:
                raise _shape(f"{' ' * depth}{node.kind} (unexpected depth)")
            parent.children.append(node)
            if len(parent.children) == wanted:
                stack.pop()
        elif node is not root:
            raise _shape(f"{node.kind} (a second statement)")
        if count:
            stack.append((depth, node, count))
        while stack and len(stack[-1][1].children) == stack[-1][2]:
            stack.pop()
    if stack:
        raise _shape(f"{stack[-1][1].kind} (fewer children than it declares)")
    return root


def _split_alias(rest: str) -> tuple[str, str | None]:
    if rest.endswith(")"):
        if rest.startswith("(alias "):
            return "", rest[7:-1]
        head, sep, tail = rest.partition(" (alias ")
        if sep:
            return head, tail[:-1]
    return rest, None


def _shape(line: str) -> SqlRefused:
    return SqlRefused(
        f"the SQL sandbox could not read ClickHouse's parse of the statement at {line[:80]!r}",
        reason="construct",
    )


def judge(root: Node, catalog: Catalog, *, write: bool = False) -> Verdict:
    """Accept one statement the sandbox may run, or say why not.

    Raises:
        SqlRefused: with the rule that refused it and what the sandbox runs.
    """
    db = catalog.database
    if root.kind == "SelectWithUnionQuery":
        return Verdict("select", _body(root, catalog))
    if root.kind == "Explain":
        if root.text == "EXPLAIN AST":
            raise _refuse(
                catalog,
                "statement",
                "EXPLAIN AST is not available here (its output "
                "ignores the format); EXPLAIN SYNTAX or EXPLAIN PLAN show the query",
            )
        if root.text not in EXPLAIN_KINDS:
            raise _refuse(catalog, "statement", f"{root.text} is not allowed")
        if len(root.children) != 1 or root.children[0].kind != "SelectWithUnionQuery":
            raise _refuse(catalog, "output", "EXPLAIN takes no settings, FORMAT or INTO OUTFILE")
        return Verdict("explain", _body(root.children[0], catalog))
    if root.kind == "DescribeQuery":
        expression = root.children[0] if len(root.children) == 1 else None
        target = expression.children[0] if expression and expression.children else None
        if (
            expression is None
            or expression.kind != "TableExpression"
            or len(expression.children) != 1
            or target is None
            or target.kind != "TableIdentifier"
            or _local(target.text, db) not in catalog.readable
        ):
            raise _refuse(
                catalog,
                "statement",
                f"DESCRIBE takes one table or view of {db}, without settings or output clauses",
            )
        return Verdict("describe", frozenset({_local(target.text, db)}))
    if root.kind == "InsertQuery":
        if not write:
            raise _refuse(catalog, "write", "an INSERT needs write mode (thumbline sql --write)")
        return _insert(root, catalog)
    raise _refuse(
        catalog,
        "statement",
        f"{root.kind.removesuffix('Query') or 'this'} statements are not allowed",
        write=write,
    )


def _insert(root: Node, catalog: Catalog) -> Verdict:
    """``INSERT INTO <db>.<table> [(columns)] SELECT ...``, nothing else."""
    db, parts = catalog.database, root.children
    target = parts[:2]
    usage = (
        f"write mode takes INSERT INTO {db}.<table> [(columns)] SELECT ..., without "  # noqa: S608 (a message)
        "settings, FORMAT data, FROM INFILE or table functions"
    )
    if len(target) != 2 or any(n.kind != "Identifier" for n in target) or target[0].text != db:
        raise _refuse(catalog, "write", usage)
    table, rest = target[1].text, parts[2:]
    if table not in catalog.writable:
        raise _refuse(catalog, "write", f"{db}.{table} takes no inserts here; {usage}")
    if rest and rest[0].kind == "ExpressionList":
        if any(c.kind != "Identifier" or c.children for c in rest[0].children):
            raise _refuse(catalog, "write", f"list the columns by name; {usage}")
        rest = rest[1:]
    if len(rest) != 1 or rest[0].kind != "SelectWithUnionQuery":
        raise _refuse(catalog, "write", usage)
    return Verdict("insert", _body(rest[0], catalog) | {table})


def _body(query: Node, catalog: Catalog) -> frozenset[str]:
    """Check every node of a SELECT; return the tables of the database it names."""
    db, tables = catalog.database, set()
    for node in query.walk():
        kind = node.kind
        if kind == "Set":
            raise _refuse(
                catalog,
                "settings",
                "SETTINGS clauses are not allowed (the limits "
                "are the server's: THUMBLINE_SQL_MAX_*)",
            )
        if kind == "ColumnsApplyTransformer":
            raise _refuse(
                catalog,
                "construct",
                "APPLY(function) is not allowed: call the function on the columns",
            )
        if kind not in BODY_KINDS:
            raise _refuse(catalog, "construct", f"{kind} is not allowed in a query")
        if kind == "SelectWithUnionQuery" and len(node.children) != 1:
            raise _refuse(
                catalog,
                "output",
                "INTO OUTFILE and FORMAT clauses are not allowed (the endpoint picks the format)",
            )
        elif kind == "TableExpression":
            first = node.children[0] if node.children else None
            if first is None or first.kind not in ("TableIdentifier", "Subquery"):
                name = first.text if first is not None else "?"
                raise _refuse(
                    catalog,
                    "table_function",
                    f"table function {name}() is not allowed: read the tables of {db}",
                )
        elif kind == "TableIdentifier":
            tables.add(_table(node.text, catalog))
        elif kind == "Identifier":
            _identifier(node.text, catalog, tables)
        elif kind == "Function":
            name = node.text.split(" ", 1)[0]
            if name.lower() in catalog.denied_functions or name.startswith("__"):
                raise _refuse(
                    catalog,
                    "function",
                    f"{name}() reaches outside the database "
                    "(files, network, dictionaries, other tables or the server)",
                )
    return frozenset(tables)


def _local(name: str, db: str) -> str:
    """``db.t`` or ``t`` as ``t``; anything else unchanged (and so never a known table)."""
    head, dot, tail = name.partition(".")
    return tail if dot and head == db else name


def _table(name: str, catalog: Catalog) -> str:
    db = catalog.database
    local = _local(name, db)
    if local in catalog.readable:
        return local
    if local in catalog.refused:
        raise _refuse(
            catalog,
            "table",
            f"{db}.{local} reads outside the database or is not a table the sandbox reads",
        )
    if "." in name:
        raise _refuse(catalog, "table", f"{name} is outside the {db} database (or no such table)")
    if not _PLAIN_NAME.match(name):
        raise _refuse(catalog, "table", f"there is no table {name!r} in {db}")
    return name  # a WITH name (ClickHouse resolves any other in the database: unknown table)


def _identifier(name: str, catalog: Catalog, tables: set[str]) -> None:
    """A column, or the table of ``x IN t``: never a name in another database."""
    db = catalog.database
    head, dot, _ = name.partition(".")
    if dot and head != db and head.lower() in catalog.databases | _SYSTEM_DATABASES:
        raise _refuse(catalog, "table", f"{name} is outside the {db} database")
    local = _local(name, db)
    if local in catalog.refused:
        raise _refuse(catalog, "table", f"{db}.{local} reads outside the database")
    if local in catalog.readable:
        tables.add(local)


_SYSTEM_DATABASES = frozenset({"system", "default", "information_schema"})


def _refuse(catalog: Catalog, reason: str, what: str, *, write: bool = False) -> SqlRefused:
    return SqlRefused(f"refused: {what}; {allowed(catalog.database, write=write)}", reason=reason)
