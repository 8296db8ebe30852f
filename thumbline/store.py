"""The ClickHouse store: one code path for chDB (embedded) and a ClickHouse server.

chDB lets one process open a path. That process (``thumbline up``) owns the
store and serves SQL to the others over loopback (:mod:`thumbline.sqlserver`);
:func:`thumbline.sqlclient.run_sql` finds the owner through the run file, or
opens the path itself when nobody owns it. SQL from keys and the CLI runs in the
sandbox of :mod:`thumbline.sandbox`; :func:`open_client` is for thumbline's own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from thumbline.cluster import LOCAL, ClusterDDL
from thumbline.embedded import installed, store_missing
from thumbline.errors import StoreError, StoreLocked, StoreUnavailable
from thumbline.outages import transient
from thumbline.schemas import migrations
from thumbline.settings import Settings

logger = logging.getLogger(__name__)

_CODE = re.compile(r"Code: (\d+)")
_LOCKED_MARKERS = ("Cannot lock file", "Another server instance")


def open_client(settings: Settings, *, readonly: bool = False) -> Client:
    """A clickhouse-connect client for the configured store.

    ``readonly`` gives a client that refuses writes and DDL (``readonly=2``, so
    per-query settings still work). Use one client per thread.

    Raises:
        StoreLocked: the chDB path is open in another process.
        StoreError: the store cannot be reached.
    """
    url = settings.store_url
    kwargs: dict[str, Any] = {}
    if readonly:
        kwargs["settings"] = {"readonly": "2"}
    if settings.clickhouse_cluster:
        # an insert into a Distributed table returns once every shard holds its rows (not
        # when this host queued them), so a sink's flush, and the offsets, come after them
        kwargs.setdefault("settings", {})["insert_distributed_sync"] = "1"
    if url.startswith("chdb://"):
        Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    try:
        return with_faults(clickhouse_connect.get_client(dsn=url, **kwargs), settings)
    except ClickHouseError as exc:
        raise store_error(exc, settings) from None
    except ImportError:
        if url.startswith("chdb://") and not installed("chdb"):
            raise store_missing() from None
        raise


#: The fault switch of the store (in ``THUMBLINE_FAULT_DIR``, for tests of outages).
STORE_DOWN = "store-down"


class _Unanswered:
    """A store client whose every call fails while ``switch`` exists, with the error a
    ClickHouse server that does not answer gives (``OperationalError``)."""

    def __init__(self, client: Client, switch: Path) -> None:
        self._client = client
        self._switch = switch

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in ("close", "close_connections"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._switch.exists():
                raise OperationalError(
                    f"Error connecting to the store: Connection refused "
                    f"(fault injected: {self._switch} exists)"
                )
            return attr(*args, **kwargs)

        return call


def with_faults(client: Client, settings: Settings) -> Client:
    """``client``, or, with ``THUMBLINE_FAULT_DIR`` set (tests only), ``client`` behind
    the store's fault switch: while ``<fault dir>/store-down`` exists, every call fails
    as a store that does not answer, whatever path or thread it comes from."""
    if settings.fault_dir is None:
        return client
    return cast(Client, _Unanswered(client, settings.fault_dir / STORE_DOWN))


def store_error(exc: BaseException, settings: Settings | None = None) -> StoreError:
    """Turn a driver error into a StoreError with the server's code, secrets removed.

    :class:`StoreUnavailable` (retriable) when waiting can cure it (the store did
    not answer: :func:`thumbline.outages.transient`).
    """
    text = str(exc)
    if any(marker in text for marker in _LOCKED_MARKERS):
        where = settings.store_display if settings else "the chDB path"
        return StoreLocked(
            f"{where} is open in another process. Run the command while `thumbline up` "
            "runs (it serves SQL to other processes), or stop the process that holds it."
        )
    if settings is not None:
        text = settings.mask(text)
    match = _CODE.search(text)
    kind = StoreUnavailable if transient(exc) else StoreError
    return kind(text.strip(), code=int(match.group(1)) if match else None)


#: Migrations that change a table's sort key or partition key (ClickHouse cannot ALTER
#: them): the migration's SQL creates ``<table>__rekeyed`` with the new keys, then
#: :func:`_rekey` copies, swaps and drops. Version -> (table, its new sort key).
REKEYED: dict[int, tuple[tuple[str, str], ...]] = {
    5: (("feedback", "project, event_id"), ("traces", "project, trace_id, span_id")),
    13: (("feedback", "project, event_id"),),
    14: (
        ("traces", "project, trace_id, span_id"),
        ("dead_letters", "topic, partition, offset, batch_index"),
        ("feedback_rates", "project, environment, model, capability, window_seconds, window_start"),
        ("alerts", "alert_id, state"),
    ),
}

#: The partition key a rekeying migration gives a table (none when not named here): its
#: sort key may stay, as 0013's does. Version -> table -> partition key.
REPARTITIONED: dict[int, dict[str, str]] = {
    13: {"feedback": "toYYYYMM(ts)"},
    14: {
        "traces": "toYYYYMM(received_at)",
        "dead_letters": "toYYYYMM(at)",
        "feedback_rates": "toYYYYMM(window_start)",
        "alerts": "toYYYYMM(at)",
    },
}

#: Columns rewritten on the way into a rekeyed table (rows stored before the
#: project was part of the identity had none when they were orphans).
_REKEY_COLUMNS = {"project": "if(project = '', 'default', project)"}


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    applied: bool  # False: it was already there


def apply_migrations(
    client: Client, database: str, *, cluster: str | None = None
) -> list[AppliedMigration]:
    """Bring ``database`` up to the newest migration; safe to run any number of times.

    Each migration's statements are idempotent (``IF NOT EXISTS``) and each
    applied migration is recorded in ``<database>.schema_migrations`` with its
    checksum, so a restart skips what is done and a half-applied one is
    completed.

    With ``cluster`` (a cluster of the server's ``remote_servers``), every
    statement is rewritten by :class:`thumbline.cluster.ClusterDDL` and runs
    ``ON CLUSTER``. Two hosts migrating at once do not double-apply anything
    that matters: ClickHouse runs ``ON CLUSTER`` statements from one queue in
    Keeper, in order, on every host, and each statement is idempotent, so the
    second host's copy of a statement finds its work done; the bookkeeping
    table is one replicated copy on every host, and both hosts' rows of a
    migration carry the same insert deduplication token, so they are one row.
    The one step that is not idempotent, copying rows into a rekeyed table, is
    refused on a cluster unless the table is empty (see :func:`_rekey_cluster`).

    Raises:
        StoreError: a statement failed, or an applied migration's file changed.
    """
    ddl = ClusterDDL(cluster, database) if cluster else None
    try:
        if ddl is None:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            client.command(
                f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
                "(version UInt32, name String, checksum String, "
                "applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
            )
        else:
            client.command(ddl.database_ddl())
            client.command(ddl.bookkeeping_ddl())
        done = {
            int(row[0]): str(row[1])
            for row in client.query(
                # database is an identifier checked by Settings, not user data
                f"SELECT version, checksum FROM {database}.schema_migrations FINAL"  # noqa: S608
            ).result_rows
        }
        result = []
        for migration in migrations.load():
            statements = migration.statements(database)
            if ddl is not None:
                # every migration is rewritten, applied or not: later ones need what it created
                statements = [out for s in statements for out in ddl.rewrite(s)]
            if migration.version in done:
                if ddl is not None:
                    for table, sorting_key in REKEYED.get(migration.version, ()):
                        ddl.rekeyed(table, sorting_key)  # what it did, for the later ones
                if done[migration.version] != migration.checksum:
                    raise StoreError(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        "was applied; add a new migration instead of editing an old one"
                    )
                result.append(AppliedMigration(migration.version, migration.name, False))
                continue
            for statement in statements:
                client.command(statement)
            for table, sorting_key in REKEYED.get(migration.version, ()):
                partition_key = REPARTITIONED.get(migration.version, {}).get(table, "")
                if ddl is None:
                    _rekey(client, database, table, sorting_key, partition_key)
                else:
                    _rekey_cluster(client, ddl, table, sorting_key, partition_key)
            client.insert(
                f"{database}.schema_migrations",
                [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
                column_names=["version", "name", "checksum", "applied_at"],
                settings={"insert_deduplication_token": f"{migration.version}-{migration.checksum}"}
                if ddl is not None
                else None,
            )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            result.append(AppliedMigration(migration.version, migration.name, True))
        return result
    except ClickHouseError as exc:
        raise store_error(exc) from None


#: What each table's retention counts from (``THUMBLINE_RETENTION_*_DAYS``). Feedback:
#: its event time, which the inbox, the views and the monthly partitions use, and which
#: the gateway keeps within days of its reception (``ingest_max_age_seconds``); traces:
#: their reception, as start_time may be missing (a Nullable column cannot be a TTL);
#: dead letters: when they came; rate windows: their start. Each table is partitioned by
#: the month of its column (0013, 0014) with ``ttl_only_drop_parts``, so the retention's
#: merges drop a month's part whole once its newest row has expired.
RETENTION_COLUMNS = {
    "feedback": "ts",
    "traces": "received_at",
    "dead_letters": "at",
    "feedback_rates": "window_start",
}
_TTL = re.compile(r"\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)", re.S)


def apply_retention(
    client: Client, database: str, days: Mapping[str, int], *, cluster: str | None = None
) -> list[str]:
    """Give each table of :data:`RETENTION_COLUMNS` the TTL of ``days`` (0: none).

    Changes only the tables whose TTL differs from the setting, so a start with
    the same settings alters nothing. The TTL is not materialized
    (``materialize_ttl_after_modify = 0``): no mutation rewrites every part at
    start; rows already stored that the new TTL expires go at their parts' next
    merge, and ``OPTIMIZE TABLE ... FINAL`` (or ``ALTER TABLE ... MATERIALIZE
    TTL``) removes them at once. Parts written after it carry it, and the
    retention's own merges drop such a part whole when all its rows have expired
    (``ttl_only_drop_parts``: a month keeps its rows until its newest expires). On a
    cluster the TTL is on the local tables.

    Returns:
        The tables whose TTL changed, as ``table: old -> new``.

    Raises:
        StoreError: the store refused a change.
    """
    on = f" ON CLUSTER '{ClusterDDL(cluster, database).cluster}'" if cluster else ""
    changed = []
    try:
        for table, column in RETENTION_COLUMNS.items():
            name = table + LOCAL if cluster else table
            rows = client.query(
                "SELECT engine_full FROM system.tables "
                "WHERE database = {db:String} AND name = {t:String}",
                parameters={"db": database, "t": name},
            ).result_rows
            if not rows:
                continue
            found = _TTL.search(str(rows[0][0]))
            current = found.group(1).strip() if found else None
            want = days.get(table, 0)
            wanted = f"{column} + toIntervalDay({want})" if want else None
            if current == wanted:
                continue
            if wanted is None:
                client.command(f"ALTER TABLE {database}.{name}{on} REMOVE TTL")
            else:
                client.command(
                    f"ALTER TABLE {database}.{name}{on} MODIFY TTL {column} + INTERVAL {want} DAY",
                    settings={"materialize_ttl_after_modify": 0},
                )
            changed.append(f"{table}: {current or 'kept forever'} -> {wanted or 'kept forever'}")
            logger.info("retention of %s.%s: %s -> %s", database, table, current, wanted)
    except ClickHouseError as exc:
        raise store_error(exc) from None
    return changed


def migrate_store(client: Client, settings: Settings) -> list[AppliedMigration]:
    """What every process that starts thumbline runs: the migrations (on the cluster
    of ``THUMBLINE_CLICKHOUSE_CLUSTER`` when set), then the retention settings.

    Raises:
        StoreError: see :func:`apply_migrations` and :func:`apply_retention`.
    """
    database, cluster = settings.clickhouse_database, settings.clickhouse_cluster
    applied = apply_migrations(client, database, cluster=cluster)
    apply_retention(client, database, settings.retention_days, cluster=cluster)
    return applied


def _rekey_cluster(
    client: Client, ddl: ClusterDDL, table: str, sorting_key: str, partition_key: str = ""
) -> None:
    """:func:`_rekey` on a cluster: swap the empty local tables, nothing to copy.

    A cluster's tables were made by this version of thumbline (there was no cluster
    mode before), so they are empty when a rekeying migration first runs there; a
    copy through ``Distributed`` tables, whose inserts reach the shards later, could
    not be checked the way :func:`_rekey` checks one node's. A table with rows is
    refused. Safe to run again: the local table's keys say whether it swapped.

    Raises:
        StoreError: the table holds rows.
    """
    new = f"{table}__rekeyed"
    current = client.query(
        "SELECT (sorting_key, partition_key) FROM system.tables "
        "WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": ddl.database, "t": table + LOCAL},
    ).result_rows[0][0]
    if tuple(current) != (sorting_key, partition_key):
        rows = client.query(f"SELECT count() FROM {ddl.database}.{table}").result_rows[0][0]  # noqa: S608
        if rows:
            raise StoreError(
                f"{ddl.database}.{table} holds {rows} rows and its keys must change to "
                f"ORDER BY ({sorting_key})"
                + (f" PARTITION BY {partition_key}" if partition_key else "")
                + "; thumbline does not copy rows between shards: migrate an "
                "empty cluster, or copy the table yourself and start again"
            )
        client.command(f"EXCHANGE TABLES {ddl.local(table)} AND {ddl.local(new)} {ddl.on}")
    # the Distributed table shards by the new sort key from now on
    ddl.sharded[table] = sorting_key
    client.command(ddl.distributed_ddl(table, replace=True))
    for statement in ddl.rewrite(f"DROP TABLE IF EXISTS {ddl.database}.{new}"):
        client.command(statement)
    logger.info(
        "%s.%s now keyed by (%s) on cluster %s", ddl.database, table, sorting_key, ddl.cluster
    )


def _rekey(
    client: Client, database: str, table: str, sorting_key: str, partition_key: str = ""
) -> None:
    """Give ``table`` the keys of ``<table>__rekeyed``: copy, check, swap, drop.

    Safe to run again at any point after a crash: the table's current sort and
    partition keys say whether the swap happened. Before it, the copy starts over (the new
    table is emptied first); after it, only the old table is left to drop.

    Raises:
        StoreError: the copy does not hold as many rows as the table (nothing is
            swapped; the next start tries again).
    """
    new = f"{table}__rekeyed"

    def scalar(sql: str, **parameters: Any) -> Any:
        return client.query(sql, parameters=parameters).result_rows[0][0]

    current = scalar(
        "SELECT (sorting_key, partition_key) FROM system.tables "
        "WHERE database = {db:String} AND name = {t:String}",
        db=database, t=table,
    )  # fmt: skip
    if tuple(current) == (sorting_key, partition_key):
        client.command(f"DROP TABLE IF EXISTS {database}.{new}")
        return
    client.command(f"TRUNCATE TABLE IF EXISTS {database}.{new}")
    columns = [
        str(row[0])
        for row in client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "AND name IN (SELECT name FROM system.columns WHERE database = {db:String} "
            "AND table = {old:String}) ORDER BY position",
            parameters={"db": database, "t": new, "old": table},
        ).result_rows
    ]
    names = ", ".join(columns)
    values = ", ".join(f"{_REKEY_COLUMNS[c]} AS {c}" if c in _REKEY_COLUMNS else c for c in columns)
    client.command(
        f"INSERT INTO {database}.{new} ({names}) SELECT {values} "  # noqa: S608 (our identifiers)
        f"FROM {database}.{table} FINAL SETTINGS insert_deduplicate = 0"
    )
    before = scalar(f"SELECT count() FROM {database}.{table} FINAL")  # noqa: S608
    after = scalar(f"SELECT count() FROM {database}.{new} FINAL")  # noqa: S608
    if before != after:
        raise StoreError(
            f"migrating {database}.{table} to its new key copied {after} of {before} rows; "
            "nothing was swapped: start again to retry, and report it if it repeats"
        )
    client.command(f"EXCHANGE TABLES {database}.{table} AND {database}.{new}")
    client.command(f"DROP TABLE IF EXISTS {database}.{new}")
    logger.info("%s.%s now keyed by (%s): %d rows moved", database, table, sorting_key, after)
