"""Score configs in the store: listed, put as new versions, deleted by a tombstone version.

The ``score_configs`` table keeps every version of every config (migration
0010): :func:`put_config` adds a version only when the definition changed, and
:func:`delete_config` adds a version marked deleted. Versions count 1, 2, ... per
(project, name); two writers changing the same name in the same instant may
both take the same number, and the store keeps one of them.

Every function runs SQL through a :data:`Sql` callable: :func:`sandbox_sql` (the
CLI and the gateway: the SQL sandbox, through the store's owner when it runs)
or :func:`client_sql` (``thumbline up`` at start, on its own client).
:func:`load_file` reads ``THUMBLINE_SCORE_CONFIGS`` (TOML ``[[score]]`` tables,
or JSON).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from thumbline.errors import ConfigError
from thumbline.queries import literal
from thumbline.schemas import InvalidEvent
from thumbline.schemas.score_configs import ScoreConfig
from thumbline.settings import Settings
from thumbline.sqlclient import run_sql

#: Runs one SQL statement (``write``: an ``INSERT ... SELECT``); rows as JSONEachRow.
Sql = Callable[[str, bool], bytes]


class _RawClient(Protocol):
    def raw_query(self, query: str, *, fmt: str = ...) -> bytes: ...


def sandbox_sql(settings: Settings, *, open_path: bool = True) -> Sql:
    """SQL in the sandbox, wherever the store is (see :func:`thumbline.sqlclient.run_sql`)."""

    def run(sql: str, write: bool) -> bytes:
        return run_sql(settings, sql, fmt="JSONEachRow", write=write, open_path=open_path)

    return run


def client_sql(client: _RawClient) -> Sql:
    """SQL on a clickhouse-connect client of thumbline's own (not for SQL from outside)."""

    def run(sql: str, write: bool) -> bytes:
        return bytes(client.raw_query(sql, fmt="JSONEachRow"))

    return run


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """One version of a config as stored: the config, or a tombstone (``config`` None)."""

    project: str
    name: str
    version: int
    created_at: datetime
    config: ScoreConfig | None


def latest_sql(database: str, *, history: bool = False) -> str:
    """The newest row of each (project, name), or with ``history`` every row."""
    columns = "project, name, version, definition, deleted, toString(created_at) AS created_at"
    if history:
        return (
            f"SELECT {columns} FROM {database}.score_configs FINAL "  # noqa: S608
            "ORDER BY project, name, version"
        )
    return (
        f"SELECT {columns} FROM {database}.score_configs FINAL "  # noqa: S608
        "ORDER BY project, name, version DESC LIMIT 1 BY project, name"
    )


def stored(row: dict[str, Any]) -> StoredConfig:
    """A row of :func:`latest_sql` as a :class:`StoredConfig`."""
    version = int(row["version"])
    config = None
    if not int(row["deleted"]):
        definition = orjson.loads(row["definition"])
        config = ScoreConfig.model_validate(
            {**definition, "project": row["project"], "name": row["name"], "version": version}
        )
    created = datetime.fromisoformat(str(row["created_at"])).replace(tzinfo=UTC)
    return StoredConfig(row["project"], row["name"], version, created, config)


def _rows(out: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def list_configs(
    sql: Sql, database: str, *, history: bool = False, project: str | None = None
) -> list[StoredConfig]:
    """The configs in force (newest version of each name, deleted ones left out), or with
    ``history`` every version, tombstones included; of ``project`` alone when given."""
    found = [stored(r) for r in _rows(sql(latest_sql(database, history=history), False))]
    if project is not None:
        found = [c for c in found if c.project == project]
    return found if history else [c for c in found if c.config is not None]


def _newest(sql: Sql, database: str, project: str, name: str) -> StoredConfig | None:
    rows = _rows(
        sql(
            "SELECT project, name, version, definition, deleted, "  # noqa: S608
            f"toString(created_at) AS created_at FROM {database}.score_configs FINAL "
            f"WHERE project = {literal(project)} AND name = {literal(name)} "
            "ORDER BY version DESC LIMIT 1",
            False,
        )
    )
    return stored(rows[0]) if rows else None


def _insert(
    sql: Sql, database: str, project: str, name: str, version: int, definition: str, deleted: bool
) -> None:
    now = datetime.now(UTC)
    sql(
        # INSERT ... SELECT: the SQL sandbox takes no VALUES
        f"INSERT INTO {database}.score_configs (project, name, version, definition, "  # noqa: S608
        f"created_at, deleted) SELECT {literal(project)}, {literal(name)}, {version}, "
        f"{literal(definition)}, fromUnixTimestamp64Milli({int(now.timestamp() * 1000)}), "
        f"{int(deleted)}",
        True,
    )


def put_config(sql: Sql, database: str, config: ScoreConfig) -> tuple[ScoreConfig, bool]:
    """Store ``config`` as a new version unless the one in force says the same.

    Returns the config in force with its version, and whether a version was added.
    """
    newest = _newest(sql, database, config.project, config.name)
    if newest is not None and newest.config is not None:
        if newest.config.definition() == config.definition():
            return newest.config, False
    version = newest.version + 1 if newest is not None else 1
    definition = json.dumps(config.definition(), sort_keys=True, separators=(",", ":"))
    _insert(sql, database, config.project, config.name, version, definition, False)
    return config.model_copy(update={"version": version}), True


def delete_config(sql: Sql, database: str, project: str, name: str) -> int | None:
    """End the config of ``name`` with a deleted version; its number, or None when no
    config was in force. Rows keep the versions they were stored with."""
    newest = _newest(sql, database, project, name)
    if newest is None or newest.config is None:
        return None
    _insert(sql, database, project, name, newest.version + 1, "{}", True)
    return newest.version + 1


def parse_configs(data: Any, where: str) -> list[ScoreConfig]:
    """Configs from a file's data: ``{"score": [...]}`` (TOML ``[[score]]``) or a list.

    Raises:
        ConfigError: names the config (by position and name) and the field at fault.
    """
    items = data.get("score") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(
            f"{where}: expected [[score]] tables (TOML) or a list of configs (JSON), "
            'e.g. [[score]] name = "stars" kind = "rating" range = [1, 5]'
        )
    configs: list[ScoreConfig] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items, 1):
        label = f"{where}: score #{index}"
        if isinstance(item, dict) and item.get("name"):
            label += f" ({item['name']})"
        if not isinstance(item, dict):
            raise ConfigError(f"{label}: must be a table of fields")
        if "version" in item:
            raise ConfigError(f"{label}: version is assigned when stored: remove it")
        item = {**item, "range": _floats(item.get("range"))}
        for key in ("bad_at_most", "good_at_least"):
            if isinstance(item.get(key), int) and not isinstance(item[key], bool):
                item[key] = float(item[key])
        try:
            config = ScoreConfig.parse({k: v for k, v in item.items() if v is not None})
        except InvalidEvent as exc:
            raise ConfigError(f"{label}: {exc.reason}") from None
        if (config.project, config.name) in seen:
            raise ConfigError(f"{label}: {config.name} of {config.project} is defined twice")
        seen.add((config.project, config.name))
        configs.append(config)
    return configs


def _floats(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def load_file(path: Path) -> list[ScoreConfig]:
    """The configs of a TOML (``[[score]]`` tables) or JSON file.

    Raises:
        ConfigError: the file cannot be read or a config is invalid (the message says which).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the score configs {path}: {exc.strerror}; fix "
            "THUMBLINE_SCORE_CONFIGS or the path given"
        ) from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"{path} is not valid {kind}: {exc}") from None
    return parse_configs(data, str(path))


def apply_configs(
    sql: Sql, database: str, configs: Iterable[ScoreConfig]
) -> list[tuple[ScoreConfig, bool]]:
    """:func:`put_config` for each: the configs in force, and whether each changed."""
    return [put_config(sql, database, config) for config in configs]
