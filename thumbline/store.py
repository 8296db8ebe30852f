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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

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


#: Migrations that change a table's sort key (ClickHouse cannot ALTER it): the
#: migration's SQL creates ``<table>__rekeyed`` with the new key, then
#: :func:`_rekey` copies, swaps and drops. Version -> (table, its new sort key).
REKEYED: dict[int, tuple[tuple[str, str], ...]] = {
    5: (("feedback", "project, event_id"), ("traces", "project, trace_id, span_id")),
}

#: Columns rewritten on the way into a rekeyed table (rows stored before the
#: project was part of the identity had none when they were orphans).
_REKEY_COLUMNS = {"project": "if(project = '', 'default', project)"}


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    applied: bool  # False: it was already there


def apply_migrations(client: Client, database: str) -> list[AppliedMigration]:
    """Bring ``database`` up to the newest migration; safe to run any number of times.

    Each migration's statements are idempotent (``IF NOT EXISTS``) and each
    applied migration is recorded in ``<database>.schema_migrations`` with its
    checksum, so a restart skips what is done and a half-applied one is
    completed.

    Raises:
        StoreError: a statement failed, or an applied migration's file changed.
    """
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
            "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {
            int(row[0]): str(row[1])
            for row in client.query(
                # database is an identifier checked by Settings, not user data
                f"SELECT version, checksum FROM {database}.schema_migrations FINAL"  # noqa: S608
            ).result_rows
        }
        result = []
        for migration in migrations.load():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise StoreError(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        "was applied; add a new migration instead of editing an old one"
                    )
                result.append(AppliedMigration(migration.version, migration.name, False))
                continue
            for statement in migration.statements(database):
                client.command(statement)
            for table, sorting_key in REKEYED.get(migration.version, ()):
                _rekey(client, database, table, sorting_key)
            client.insert(
                f"{database}.schema_migrations",
                [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
                column_names=["version", "name", "checksum", "applied_at"],
            )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            result.append(AppliedMigration(migration.version, migration.name, True))
        return result
    except ClickHouseError as exc:
        raise store_error(exc) from None


def _rekey(client: Client, database: str, table: str, sorting_key: str) -> None:
    """Give ``table`` the sort key of ``<table>__rekeyed``: copy, check, swap, drop.

    Safe to run again at any point after a crash: the table's current sort key
    says whether the swap happened. Before it, the copy starts over (the new
    table is emptied first); after it, only the old table is left to drop.

    Raises:
        StoreError: the copy does not hold as many rows as the table (nothing is
            swapped; the next start tries again).
    """
    new = f"{table}__rekeyed"

    def scalar(sql: str, **parameters: Any) -> Any:
        return client.query(sql, parameters=parameters).result_rows[0][0]

    current = scalar(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        db=database, t=table,
    )  # fmt: skip
    if current == sorting_key:
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
