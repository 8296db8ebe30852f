"""The migrations on a ClickHouse cluster: ``Replicated*`` tables, ``Distributed`` reads.

With ``THUMBLINE_CLICKHOUSE_CLUSTER`` set, :class:`ClusterDDL` rewrites every
statement of ``schemas/migrations`` (written for one node) for that cluster of
the server's ``remote_servers``. It reads statements, not a list of tables, so
a new migration is rewritten by the same rules (and a form it does not know
fails in the unit tests, not on an operator's cluster):

* ``CREATE TABLE db.t (...) ENGINE = XMergeTree(args)`` becomes two tables, both
  ``ON CLUSTER``: ``db.t_local`` with ``ReplicatedXMergeTree(path, replica, args)``
  holding the rows of one shard, and ``db.t``, a ``Distributed`` table over the
  ``t_local`` of every shard. Every query of thumbline's code (and an analyst's)
  names ``db.t`` and is unchanged: reads see all shards, inserts are routed by
  the sharding key. The reverse naming (``t`` local, ``t_all`` distributed) would
  make every read of thumbline's code see one shard unless each were renamed.
* Views are created ``ON CLUSTER`` over the ``Distributed`` tables (one host's view
  reads every shard; ``FINAL`` runs on each shard, where all versions of a row
  are, see the sharding key). A materialized view fires on the inserts of one
  host's table, so it reads ``t_local`` and writes its ``TO`` table's ``_local``.
* ``ALTER``: column changes go to the local table and its ``Distributed`` table
  (both must have the column); everything else (indexes, TTL, settings,
  mutations) to the local table only. ``OPTIMIZE``, ``TRUNCATE``, ``DELETE`` and
  ``EXCHANGE`` go to the local tables, ``DROP`` to both.

The Keeper path of every replicated table is ClickHouse's own default,
``'/clickhouse/tables/{uuid}/{shard}', '{replica}'`` (documented for the
``Replicated`` database engine and the ``default_replica_path`` server setting:
"For ReplicatedMergeTree tables if no arguments provided, then default arguments
are used: /clickhouse/tables/{uuid}/{shard} and {replica}"), written out so a
server with another default does not change it. ``{uuid}`` (same on every host
because the statement runs ``ON CLUSTER`` in an Atomic database) rather than the
``'/clickhouse/tables/{shard}/{database}/{table}'`` of the replication guide:
ClickHouse unfolds ``{table}`` when the table is created, and the rekeying
migrations swap tables with ``EXCHANGE TABLES``, so a path named after a table
would, after a swap, belong to a table of another name and block the next
migration that creates a table of the first name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from thumbline.errors import StoreError

#: the suffix of the table that holds one shard's rows
LOCAL = "_local"
#: ClickHouse's default_replica_path and default_replica_name (see the module docstring)
REPLICA_PATH = "/clickhouse/tables/{uuid}/{shard}"
REPLICA_NAME = "{replica}"

#: Sharding keys narrower than the whole sort key, by table (a rebuilt table, ``t__x``,
#: takes ``t``'s). Any expression of the sort key's columns keeps every version of a
#: row on one shard (ReplacingMergeTree deduplicates per shard); one of a prefix
#: keeps more together: every span of a trace on one shard, so a trace page reads
#: one shard's parts. Used only when all its columns are in the table's sort key.
SHARDING: dict[str, tuple[str, ...]] = {"traces": ("project", "trace_id")}

_CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
_COLUMN_COMMAND = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)


class ClusterUnsupported(StoreError):
    """A migration's statement has a form the cluster rewriting does not know."""


def _split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside quotes, backquotes and brackets."""
    parts, depth, quote, start = [], 0, "", 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _close(text: str, open_at: int) -> int:
    """The index of the bracket that closes the one at ``open_at``."""
    depth, quote = 0, ""
    i = open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ClusterUnsupported(f"unbalanced brackets in: {text[:200]}")


def sort_columns(order_by: str) -> tuple[str, ...]:
    """The expressions of an ``ORDER BY`` clause: ``(a, b)`` or ``a``."""
    text = order_by.strip()
    if text.startswith("(") and _close(text, 0) == len(text) - 1:
        text = text[1:-1]
    return tuple(_split_top(text))


def sharding_key(table: str, order_by: str) -> str:
    """The ``Distributed`` sharding key of ``table``: a hash of its sort key (the key
    ReplacingMergeTree deduplicates on), or of :data:`SHARDING`'s narrower columns."""
    columns = sort_columns(order_by)
    narrower = SHARDING.get(table.split("__")[0])
    if narrower and set(narrower) <= set(columns):
        columns = narrower
    return f"cityHash64({', '.join(columns)})"


@dataclass
class ClusterDDL:
    """Rewrites one node's migration statements for ``cluster`` (see the module).

    Feed it every migration's statements in order, applied or not: it learns from
    each ``CREATE TABLE`` which tables are sharded, and the later ``ALTER``s need it.
    """

    cluster: str
    database: str
    #: sharded table -> its sort key (``ORDER BY``), in the order they were created
    sharded: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _CLUSTER_NAME.match(self.cluster):
            raise StoreError(
                f"clickhouse_cluster {self.cluster!r} is not a cluster name of remote_servers: "
                "set THUMBLINE_CLICKHOUSE_CLUSTER to letters, digits, '_' or '-'"
            )

    @property
    def on(self) -> str:
        return f"ON CLUSTER '{self.cluster}'"

    def _name(self, table: str) -> str:
        return f"{self.database}.{table}"

    def _table(self, ref: str) -> str:
        """The table of ``db.table``; refuses another database's."""
        database, _, table = ref.rpartition(".")
        if database != self.database:
            raise ClusterUnsupported(f"a migration names a table outside {self.database}: {ref}")
        return table

    def database_ddl(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {self.database} {self.on}"

    def bookkeeping_ddl(self) -> str:
        """The migrations' own table: one copy on every host (one Keeper path for the
        whole cluster, a replica per host), so every host sees what any has applied."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self._name('schema_migrations')} {self.on} "
            "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/all', "
            "'{shard}-{replica}') ORDER BY version"
        )

    def distributed_ddl(self, table: str, *, replace: bool = False) -> str:
        """The ``Distributed`` table ``table`` over every shard's ``table_local``."""
        head = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
        key = sharding_key(table, self.sharded[table])
        return (
            f"{head} {self._name(table)} {self.on} AS {self._name(table + LOCAL)} "
            f"ENGINE = Distributed('{self.cluster}', '{self.database}', '{table}{LOCAL}', {key})"
        )

    def rekeyed(self, table: str, sorting_key: str) -> list[str]:
        """What follows the swap of ``table_local`` with ``table__rekeyed_local`` (the
        rekeying migrations, ``thumbline.store.REKEYED``): ``table`` shards by the
        new sort key, and the ``__rekeyed`` pair is dropped."""
        self.sharded[table] = sorting_key
        out = [self.distributed_ddl(table, replace=True)]
        return out + self.rewrite(f"DROP TABLE IF EXISTS {self._name(table)}__rekeyed")

    def local(self, table: str) -> str:
        """``db.table_local`` when ``table`` is sharded, else ``db.table``."""
        return self._name(table + LOCAL if table in self.sharded else table)

    def rewrite(self, statement: str) -> list[str]:
        """The statements that do on the cluster what ``statement`` does on one node.

        Raises:
            ClusterUnsupported: a form this module does not rewrite yet (add it here).
        """
        s = statement.strip().rstrip(";").strip()
        db = re.escape(self.database)
        name = rf"({db}\.\w+)"
        if m := re.match(rf"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{name}\s*(?=\()", s, re.I):
            columns_end = _close(s, m.end())
            return self._create_table(
                m.group(1) or "", self._table(m.group(2)), s[m.end() : columns_end + 1],
                s[columns_end + 1 :],
            )  # fmt: skip
        if m := re.match(
            rf"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{name}\s+AS\s+{name}\s+(?=ENGINE\b)",
            s,
            re.I,
        ):
            # the columns of another table's: on a cluster, of its local table
            source = f"AS {self.local(self._table(m.group(3)))}"
            return self._create_table(
                m.group(1) or "", self._table(m.group(2)), source, s[m.end() :]
            )
        if m := re.match(r"RENAME\s+TABLE\s+(.+)$", s, re.I | re.S):
            return self._rename(m.group(1))
        if m := re.match(
            rf"CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{name}\s+AS\b", s, re.I
        ):
            return [f"{s[: m.end(3)]} {self.on}{s[m.end(3) :]}"]
        if m := re.match(
            rf"CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{name}\s+TO\s+{name}\s+",
            s,
            re.I,
        ):
            return [self._materialized_view(s, m)]
        if m := re.match(rf"ALTER\s+TABLE\s+{name}\s+(.*)$", s, re.I | re.S):
            return self._alter(self._table(m.group(1)), m.group(2))
        if m := re.match(rf"(DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?){name}\s*(SYNC)?$", s, re.I):
            table = self._table(m.group(2))
            out = [f"{m.group(1)}{self._name(table)} {self.on} SYNC"]
            if table in self.sharded:
                out.append(f"{m.group(1)}{self.local(table)} {self.on} SYNC")
                del self.sharded[table]
            return out
        if m := re.match(rf"DROP\s+VIEW\s+(IF\s+EXISTS\s+)?{name}$", s, re.I):
            return [f"{s} {self.on}"]
        if m := re.match(rf"EXCHANGE\s+TABLES\s+{name}\s+AND\s+{name}$", s, re.I):
            a, b = self._table(m.group(1)), self._table(m.group(2))
            return [f"EXCHANGE TABLES {self.local(a)} AND {self.local(b)} {self.on}"]
        if m := re.match(
            rf"(OPTIMIZE\s+TABLE|TRUNCATE\s+TABLE\s+(?:IF\s+EXISTS\s+)?|DELETE\s+FROM)\s*{name}(.*)$",
            s,
            re.I | re.S,
        ):
            table = self._table(m.group(2))
            return [f"{m.group(1).strip()} {self.local(table)} {self.on}{m.group(3)}"]
        if re.match(r"INSERT\s+INTO\b", s, re.I):
            return [s]  # through the Distributed table, from this host only
        raise ClusterUnsupported(
            f"cluster mode cannot rewrite this migration statement yet (add its form to "
            f"thumbline/cluster.py): {s[:200]}"
        )

    def _create_table(self, if_not_exists: str, table: str, columns: str, tail: str) -> list[str]:
        """``CREATE TABLE db.table <columns> <tail>``: ``columns`` is ``(...)`` or ``AS db.t``."""
        engine = re.match(r"\s*ENGINE\s*=\s*(\w+)", tail, re.I)
        if engine is None:
            raise ClusterUnsupported(f"CREATE TABLE {table} without ENGINE = ...")
        kind = engine.group(1)
        if not kind.endswith("MergeTree"):
            head = f"CREATE TABLE {if_not_exists}{self._name(table)}"
            return [f"{head} {self.on} {columns} {tail.lstrip()}"]
        if kind.startswith("Replicated"):
            raise ClusterUnsupported(f"{table}: a migration names a Replicated engine itself")
        rest = tail[engine.end() :]
        args = ""
        if (bracket := re.match(r"\s*\(", rest)) is not None:
            close = _close(rest, bracket.end() - 1)
            args = rest[bracket.end() : close].strip()
            rest = rest[close + 1 :]
        replicated = ", ".join(filter(None, [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'", args]))
        order = re.search(
            r"\bORDER\s+BY\s+(.+?)(?=\s+(?:PARTITION\s+BY|PRIMARY\s+KEY|SAMPLE\s+BY|TTL|"
            r"SETTINGS|COMMENT)\b|$)",
            rest,
            re.I | re.S,
        )
        if order is None:
            raise ClusterUnsupported(f"{table}: a MergeTree table without ORDER BY")
        # the window of replicated inserts' deduplication is the replicated setting
        rest = re.sub(
            r"\bnon_replicated_deduplication_window\b", "replicated_deduplication_window", rest
        )
        self.sharded[table] = order.group(1).strip()
        local = (
            f"CREATE TABLE {if_not_exists}{self.local(table)} {self.on} "
            f"{columns} ENGINE = Replicated{kind}({replicated}){rest}"
        )
        return [local, self.distributed_ddl(table)]

    def _rename(self, pairs_text: str) -> list[str]:
        """``RENAME TABLE a TO b[, c TO d]``: the local tables are renamed; the Distributed
        tables of the old names are dropped and those of the new names made (over the
        renamed local tables, sharded by their sort keys)."""
        pairs = []
        for pair in _split_top(pairs_text):
            m = re.fullmatch(r"(\S+)\s+TO\s+(\S+)", pair, re.I)
            if m is None:
                raise ClusterUnsupported(f"RENAME TABLE {pairs_text[:200]}: not 'a TO b, ...'")
            pairs.append((self._table(m.group(1)), self._table(m.group(2))))
        sharded = [(a, b) for a, b in pairs if a in self.sharded]
        if not sharded:
            return [f"RENAME TABLE {pairs_text} {self.on}"]
        if len(sharded) != len(pairs):
            raise ClusterUnsupported(f"RENAME TABLE {pairs_text[:200]}: sharded tables with others")
        renames = ", ".join(f"{self.local(a)} TO {self._name(b + LOCAL)}" for a, b in pairs)
        keys = {a: self.sharded.pop(a) for a, _ in pairs}
        for a, b in pairs:
            self.sharded[b] = keys[a]
        gone = [a for a, _ in pairs if a not in self.sharded]
        return [
            f"RENAME TABLE {renames} {self.on}",
            *(f"DROP TABLE IF EXISTS {self._name(a)} {self.on} SYNC" for a in gone),
            *(self.distributed_ddl(b, replace=True) for _, b in pairs),
        ]

    def _materialized_view(self, s: str, m: re.Match[str]) -> str:
        target = self._table(m.group(3))
        if target not in self.sharded:
            raise ClusterUnsupported(f"materialized view into {target}: not a sharded table")
        body = s[m.end() :]
        # it fires on inserts into one host's table: the first FROM reads the local one
        source = re.search(rf"\bFROM\s+{re.escape(self.database)}\.(\w+)\b", body, re.I)
        if source and source.group(1) in self.sharded:
            body = body[: source.start(1) - len(self.database) - 1] + (
                self.local(source.group(1)) + body[source.end(1) :]
            )
        head = s[: m.end(2)]
        return f"{head} {self.on} TO {self.local(target)} {body}"

    def _alter(self, table: str, commands: str) -> list[str]:
        parts = _split_top(commands)
        if table not in self.sharded:
            return [f"ALTER TABLE {self._name(table)} {self.on} {commands}"]
        columns = [p for p in parts if _COLUMN_COMMAND.match(p)]
        out = [f"ALTER TABLE {self.local(table)} {self.on} {', '.join(parts)}"]
        if columns:
            # a Distributed table has no indexes, TTL or AFTER-ordering needs: columns only
            out.append(f"ALTER TABLE {self._name(table)} {self.on} {', '.join(columns)}")
        return out
